"""What `kerasformers serve` serves: a model directory's model and tokenizer.

A directory holds a config (`config.json`, or Google's `bert_config.json`),
the weights (any format `build_transformer_model` reads) and a tokenizer
(`tokenizer.json`, `vocab.txt` or a sentencepiece `*.model`). Decoder families
(and T5, and an encoder built with application="lm" / "unilm") serve
completions; encoder families serve embeddings.
"""

import glob
import json
import os

from kerasformers.models import (
    HF_MODEL_TYPES,
    MODELS,
    build_transformer_model,
    config_file_names,
    find_config_file,
)
from kerasformers.models.config import load_config

# Families whose plain build is a language model.
GENERATIVE_PREFIXES = ("gpt", "t5", "mt5", "llama", "qwen", "mistral", "gemma")
POOLINGS = ("cls", "mean")

# A conversation rendered for a tokenizer that has no chat template of its own.
PLAIN_CHAT = "{role}: {content}\n"


class ModelDirectoryError(ValueError):
    """The directory cannot be served: names the file or option at fault."""


class ServedModel:
    """A loaded model and its tokenizer, with what the server needs to know.

    Attributes:
        name: the model id clients send ("model" in requests).
        family: the `MODELS` key it was built as.
        kind: "generation" (completions, chat) or "embedding".
        model: the keras.Model.
        tokenizer: a `Tokenizer`, `SpTokenizer` or `HFTokenizer`.
        end_ids: ids that end a completion (tuple, maybe empty).
        context: the most tokens (prompt + completion) the model's positions
            allow, or None when unbounded (relative positions).
        pooling: "cls" or "mean" (embedding models).
        has_chat_template: whether the tokenizer brings its own template
            (otherwise chats are rendered as "role: content" lines).
    """

    def __init__(
        self, name, family, kind, model, tokenizer, end_ids, context, pooling, seq2seq=False
    ):
        self.name = name
        self.family = family
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.end_ids = tuple(end_ids)
        self.context = context
        self.pooling = pooling
        self.seq2seq = seq2seq
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    # ------------------------------------------------------------- text <-> ids
    def encode_prompt(self, text, special_tokens=True):
        """The ids of a completion prompt (the tokenizer's special tokens around it)."""
        if _is_hf(self.tokenizer):
            return self.tokenizer.encode(text, add_special_tokens=special_tokens)[0]
        ids = self.tokenizer.encode(text)[0]
        if self.kind == "generation" and not self.seq2seq and self.family.startswith("gpt"):
            # bert4keras' GPT examples feed [CLS] + text without the closing [SEP].
            ids = ids[:-1] if ids and ids[-1] in self.end_ids else ids
        return ids

    def render_chat(self, messages):
        """The prompt text of a conversation, ending with the assistant's turn."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        text = "".join(
            PLAIN_CHAT.format(role=m["role"], content=_text_of(m["content"])) for m in messages
        )
        return text + "assistant:"

    def encode_chat(self, messages):
        text = self.render_chat(messages)
        # A template writes its own special tokens (BOS included).
        return self.encode_prompt(text, special_tokens=not self.has_chat_template)

    def decode(self, ids):
        """The text of generated ids. Ids past the tokenizer's vocabulary (models
        pad their embedding tables: Qwen2's 151,936 rows hold 151,665 tokens)
        have no text and are left out, rather than failing the whole batch."""
        size = self.tokenizer.vocab_size
        return self.tokenizer.decode([i for i in ids if i < size])


def _text_of(content):
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def _is_hf(tokenizer):
    return hasattr(tokenizer, "apply_chat_template")


def find_config(model_dir):
    path = find_config_file(model_dir)
    if path is None:
        raise ModelDirectoryError(
            f"{model_dir}: no model config found (looked for {', '.join(config_file_names())})"
        )
    return path


def load_tokenizer(model_dir, config):
    """The directory's tokenizer: tokenizer.json, vocab.txt or one *.model."""
    from kerasformers.tokenizers import HFTokenizer, SpTokenizer, Tokenizer

    if os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
        return HFTokenizer(model_dir)
    vocab = os.path.join(model_dir, "vocab.txt")
    if os.path.isfile(vocab):
        lower = _tokenizer_setting(model_dir, "do_lower_case")
        if lower is None:  # Google's uncased/Chinese releases lower-case
            lower = "cased" not in os.path.basename(os.path.abspath(model_dir)).lower()
        return Tokenizer(vocab, do_lower_case=bool(lower))
    pieces = sorted(glob.glob(os.path.join(model_dir, "*.model")))
    if len(pieces) == 1:
        return SpTokenizer(pieces[0])
    if len(pieces) > 1:
        raise ModelDirectoryError(
            f"{model_dir}: several sentencepiece models ({[os.path.basename(p) for p in pieces]}); "
            "keep one"
        )
    raise ModelDirectoryError(
        f"{model_dir}: no tokenizer found (looked for tokenizer.json, vocab.txt, *.model)"
    )


def _tokenizer_setting(model_dir, key):
    path = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get(key)
    except (ValueError, AttributeError):
        return None


def _end_ids(model_dir, config, tokenizer):
    ids = []

    def add(value):
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and not isinstance(i, bool) and i not in ids:
                ids.append(i)

    add(config.get("eos_token_id"))
    generation_config = os.path.join(model_dir, "generation_config.json")
    if os.path.isfile(generation_config):
        try:
            with open(generation_config, encoding="utf-8") as f:
                add(json.load(f).get("eos_token_id"))
        except (ValueError, AttributeError):
            pass
    add(getattr(tokenizer, "eos_token_id", None))
    add(getattr(tokenizer, "_token_end_id", None))
    return ids


def _family(model, config, config_path):
    if model.lower() != "auto":
        if model.lower() not in MODELS:
            raise ModelDirectoryError(
                f"unknown --model {model!r}; allowed: auto, {', '.join(sorted(MODELS))}"
            )
        return model.lower()
    model_type = config.get("model_type")
    if model_type is None:
        raise ModelDirectoryError(
            f"{config_path} names no model_type (a Google config); pass --model, one of "
            f"{', '.join(sorted(MODELS))}"
        )
    if model_type not in HF_MODEL_TYPES:
        raise ModelDirectoryError(
            f"{config_path}: model_type {model_type!r} is not one kerasformers builds; known: "
            f"{', '.join(sorted(HF_MODEL_TYPES))}"
        )
    family = HF_MODEL_TYPES[model_type]
    if family.startswith("t5") and config.get("feed_forward_proj", "relu") != "relu":
        family = "t5.1.1"
    return family


def load_served_model(model_dir, model="auto", application=None, pooling="cls", name=None):
    """Builds the model of `model_dir` with its weights and tokenizer.

    Args:
        model_dir: the directory.
        model: a `MODELS` name or "auto" (config.json's model_type).
        application: None (the family's own: a language model for decoders,
            an encoder for the BERT families), or "lm" / "unilm" to serve
            completions from a BERT-family model.
        pooling: "cls" or "mean", for embeddings.
        name: the model id to serve under (default: the directory's name).

    Raises:
        ModelDirectoryError: for a missing config, tokenizer or weights, or an
            unknown family, naming the file or value.
    """
    if not os.path.isdir(model_dir):
        raise ModelDirectoryError(f"{model_dir}: not a directory")
    if pooling not in POOLINGS:
        raise ModelDirectoryError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if application not in (None, "lm", "unilm"):
        raise ModelDirectoryError(f"application must be lm or unilm, got {application!r}")
    config_path = find_config(model_dir)
    config = load_config(config_path)
    family = _family(model, config, config_path)
    tokenizer = load_tokenizer(model_dir, config)
    generative = family.startswith(GENERATIVE_PREFIXES) or application is not None
    if family.endswith("_encoder"):
        generative = False
    kwargs = {}
    if application is not None:
        kwargs["application"] = application
    elif not generative:
        kwargs["application"] = "encoder"
    builder = build_transformer_model(
        config_path, model_dir, model=family, return_keras_model=False, **kwargs
    )
    seq2seq = hasattr(builder, "decoder_builder")
    # Learned or rotary positions bound prompt + completion; T5's relative
    # buckets (and NEZHA's) do not.
    context = None if seq2seq else getattr(builder, "max_position", None)
    return ServedModel(
        name=name or os.path.basename(os.path.abspath(model_dir)),
        family=family,
        kind="generation" if generative else "embedding",
        model=builder.model,
        tokenizer=tokenizer,
        end_ids=_end_ids(model_dir, config, tokenizer) if generative else (),
        context=int(context) if isinstance(context, int) else None,
        pooling=pooling,
        seq2seq=seq2seq,
    )
