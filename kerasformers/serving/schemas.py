"""The request bodies of the OpenAI wire format, as the server accepts them.

Types are strict (a string where a number belongs is an error, not coerced),
so that every bad field comes back as a 400 naming it. Fields OpenAI defines
that this server does not implement are refused when set to anything but
their neutral value, never silently ignored; unknown fields are ignored, as
OpenAI's own server does for forward compatibility.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictInt | StrictFloat


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: StrictBool = False


class _Sampling(_Body):
    model: StrictStr
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    # Not OpenAI's, but vLLM's and HF's: 0 (or None) means no top-k cut.
    top_k: StrictInt | None = Field(default=None, ge=0)
    repetition_penalty: Number | None = Field(default=None, gt=0)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(default=None, ge=0, lt=2**31)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(default=None, ge=1)
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    logprobs: StrictBool | StrictInt | None = None
    user: StrictStr | None = None

    def unsupported(self):
        """(field, why) of the first field set to what this server cannot do."""
        if self.n not in (None, 1):
            return "n", "only n=1 is supported"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0):
                return name, f"{name} is not supported (use repetition_penalty)"
        if self.logprobs not in (None, False, 0):
            return "logprobs", "logprobs are not supported"
        return None

    def stops(self):
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None

    def unsupported(self):
        found = super().unsupported()
        if found:
            return found
        if self.echo:
            return "echo", "echo is not supported"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of=1 is supported"
        return None


class TextPart(_Body):
    type: Literal["text"]
    text: StrictStr


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    tools: list | None = None

    def unsupported(self):
        found = super().unsupported()
        if found:
            return found
        if self.tools:
            return "tools", "tool calling is not supported"
        return None


class EmbeddingRequest(_Body):
    model: StrictStr
    input: StrictStr | list[StrictStr]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None
    user: StrictStr | None = None
