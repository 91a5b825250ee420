"""Chat templates: found where transformers keeps them and rendered as it does.

A chat template (the ``chat_template`` of ``tokenizer_config.json``, or a
``chat_template.jinja`` file beside it: ``read_tokenizer_config`` finds it and
the special tokens it may use) is a Jinja program that turns a list
of messages into the prompt string the model was trained on. It comes from
the Hub, so it is untrusted code: it runs in Jinja's immutable sandbox, with
the environment transformers gives it (``trim_blocks``/``lstrip_blocks``,
``loopcontrols``, the ``{% generation %}`` tag, ``raise_exception``,
``strftime_now``, a ``tojson`` filter that keeps non-ASCII characters and takes
``indent``/``separators``/``sort_keys``, a restricted ``dict`` and
``namespace``), and sees only plain JSON data rebuilt from its inputs.

Departures from transformers, all about bad input:

* touching an unsafe attribute (``''.__class__``, ``x.__globals__``, a list's
  ``append``) fails at once with ``ChatTemplateError`` naming the template;
  transformers' sandbox returns an undefined value there, which prints as
  ``""`` and only fails if called;
* messages are checked first: each must be a dict with a str ``role`` and a
  ``content``, which may be missing or None only in a message that has
  ``tool_calls`` (an assistant turn that only calls tools); transformers
  leaves that to each template;
* only dicts are accepted as messages and tools (no pydantic objects, no
  Python functions turned into JSON schemas), and one conversation per call.

Example:
    >>> template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    >>> render_chat_template(template, [{"role": "user", "content": "hi"}])
    '<user>hi'

Reference:
    transformers' chat templating guide,
    https://huggingface.co/docs/transformers/main/en/chat_templating
"""

import collections
import functools
import json
import os
from collections.abc import Mapping
from datetime import datetime

from kerasformers.tokenizers.base import _short_repr

__all__ = [
    "ChatTemplateError",
    "TokenizerConfig",
    "normalize_messages",
    "read_tokenizer_config",
    "render_chat_template",
    "select_chat_template",
]

# Names a message's reasoning is passed under; templates read the first and
# gpt-oss reads "thinking", so every present one is copied to both (as
# transformers does).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


_NAMED_SPECIAL_TOKENS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)  # fmt: skip


TokenizerConfig = collections.namedtuple(
    "TokenizerConfig", "config source special_tokens chat_template chat_template_source"
)
TokenizerConfig.__doc__ = """What ``read_tokenizer_config`` found.

``source`` is the config's path, "the tokenizer_config dict", or None when
there is no config; ``chat_template_source`` names where the template came from.
"""


def read_tokenizer_config(tokenizer_config, folder):
    """Reads the chat template(s) and named special tokens of a transformers tokenizer.

    Args:
        tokenizer_config: a path (a ``tokenizer_config.json`` or its folder),
            a dict, or None for ``folder/tokenizer_config.json`` if it exists.
        folder: the folder of ``tokenizer.json``, where ``chat_template.jinja``
            and ``additional_chat_templates/*.jinja`` are looked for.

    Returns:
        A ``TokenizerConfig``: the config dict and where it came from; the
        special tokens a template sees (``bos_token`` ... ``mask_token``, other
        ``*_token`` strings and a dict ``extra_special_tokens``, as transformers
        collects them); the template(s) (a str, ``{name: template}`` or None)
        and where they came from.

    Raises:
        FileNotFoundError: if ``tokenizer_config`` names a missing file.
        TypeError / ValueError: for a config that is not a path or dict, not a
            JSON object, or holds malformed tokens or templates.
    """
    config, source = _read_config(tokenizer_config, folder)
    label = source or f"{folder} (no tokenizer_config.json)"
    templates, template_source = _chat_templates(config, label, folder)
    special_tokens = _special_tokens(config, label)
    return TokenizerConfig(config, source, special_tokens, templates, template_source)


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"HFTokenizer: {what} {path} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"HFTokenizer: {what} {path} must hold a JSON object, got {type(value).__name__}"
        )
    return value


def _read_config(tokenizer_config, folder):
    """Returns ``(config dict, where it came from)``."""
    if isinstance(tokenizer_config, Mapping):
        return dict(tokenizer_config), "the tokenizer_config dict"
    if tokenizer_config is None:
        path = os.path.join(folder, "tokenizer_config.json")
        if not os.path.isfile(path):
            return {}, None
    else:
        if not isinstance(tokenizer_config, (str, os.PathLike)):
            raise TypeError(
                "HFTokenizer: tokenizer_config must be a path or a dict, got "
                f"{type(tokenizer_config).__name__}"
            )
        path = os.fspath(tokenizer_config)
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer_config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"HFTokenizer: tokenizer_config {path} does not exist")
    return _read_json(path, "tokenizer config"), path


def _token_content(value, key, source):
    """The string of a config token: a str, or an AddedToken dict's ``content``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(
        f"HFTokenizer: {key} in {source} must be a str or an AddedToken dict with 'content', "
        f"got {value!r}"
    )


def _special_tokens(config, source):
    """The named special tokens a chat template sees, as transformers collects them."""
    tokens = {}
    for key, value in config.items():
        named = key in _NAMED_SPECIAL_TOKENS
        if named or (key.endswith("_token") and isinstance(value, (str, Mapping))):
            content = _token_content(value, key, source)
            if content is not None:
                tokens[key] = content
    extra = config.get("extra_special_tokens")
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            tokens[key] = _token_content(value, f"extra_special_tokens.{key}", source)
    return tokens


def _chat_templates(config, config_source, folder):
    """The model's chat template(s) and where they came from.

    As in transformers, ``chat_template.jinja`` (and ``additional_chat_templates/*.jinja``)
    beside ``tokenizer.json`` win over the ``chat_template`` key of the config.
    """
    templates = {}
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            templates["default"] = f.read()
    extra_dir = os.path.join(folder, "additional_chat_templates")
    if os.path.isdir(extra_dir):
        for name in sorted(os.listdir(extra_dir)):
            if name.endswith(".jinja"):
                with open(os.path.join(extra_dir, name), encoding="utf-8") as f:
                    templates[name[: -len(".jinja")]] = f.read()
    if templates:
        if list(templates) == ["default"]:
            return templates["default"], jinja
        return templates, f"the .jinja files in {folder}"

    value = config.get("chat_template")
    source = config_source
    if value is None or isinstance(value, str):
        return value, source
    if isinstance(value, (list, tuple)):
        try:
            return {item["name"]: item["template"] for item in value}, source
        except (KeyError, TypeError):
            pass
    if isinstance(value, Mapping):
        return dict(value), source
    raise ValueError(
        f"HFTokenizer: the chat_template of {source} must be a str or a list of "
        "{'name', 'template'} dicts, "
        f"got {_short_repr(value)}"
    )


class ChatTemplateError(ValueError):
    """A chat template failed: bad syntax, a sandbox violation or its own ``raise_exception``."""


class _RaisedByTemplate(Exception):
    """What ``raise_exception(message)`` throws inside a template."""


def _raise_exception(message):
    raise _RaisedByTemplate(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes <, >, & and ' for HTML; templates want plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format):
    return datetime.now().strftime(format)


class _TemplateDict:
    """``dict(...)`` for templates, without the class itself (no ``dict.__subclasses__``)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


@functools.cache
def _environment():
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj, attribute):
            # Jinja returns an undefined that prints as "": fail loudly instead.
            raise SecurityError(
                f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe"
            )

    class GenerationTag(jinja2.ext.Extension):
        # {% generation %}...{% endgeneration %} marks the assistant's text for
        # transformers' assistant mask; here it renders its body unchanged.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_render_body")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render_body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        # Underscore names on a namespace would reach CPython internals.
        def __init__(*args, **kwargs):
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(f"a namespace cannot hold the underscore name {name!r}")

    env = Sandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = Namespace
    return env


@functools.lru_cache(maxsize=32)
def _compile(template):
    return _environment().from_string(template)


def _plain(value):
    """A copy of ``value`` made of JSON types only, so the sandbox sees no foreign methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # str subclasses (enums, ...) carry extra methods
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if type(value).__module__ == "numpy" and hasattr(value, "item") and not value.shape:
        return _plain(value.item())  # NumPy scalars
    # Anything else (images, arrays, objects) becomes an inert placeholder, as in transformers.
    return f"<{type(value).__name__}>"


def normalize_messages(messages):
    """Checks a conversation and returns the plain copy a template sees.

    Keys whose value is None are dropped (APIs send ``content=None`` next to
    ``tool_calls``; templates handle a missing key better), and a message's
    reasoning is copied to ``reasoning_content`` and ``thinking``.

    Args:
        messages: a list of message dicts, each with a ``role`` and a
            ``content`` (a str or a list of content blocks).

    Returns:
        A new list of new dicts.

    Raises:
        TypeError: if ``messages`` is not a list or tuple of dicts, or a role
            is not a str.
        ValueError: if it is empty, or a message lacks ``role``, or lacks
            ``content`` without having ``tool_calls``; the message's index
            is named.
    """
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of message dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: a chat template needs at least one message")
    normalized = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            hint = (
                " (one conversation per call: a batch of conversations is not supported)"
                if isinstance(message, (list, tuple))
                else ""
            )
            raise TypeError(
                f"messages[{index}] must be a dict with 'role' and 'content', got "
                f"{type(message).__name__}{hint}"
            )
        role = message.get("role")
        if role is None:
            raise ValueError(
                f"messages[{index}] has no 'role' (keys: {sorted(map(str, message))}); every "
                "message needs one, e.g. 'system', 'user', 'assistant' or 'tool'"
            )
        if not isinstance(role, str):
            raise TypeError(f"messages[{index}]['role'] must be a str, got {type(role).__name__}")
        if message.get("content") is None and not message.get("tool_calls"):
            raise ValueError(
                f"messages[{index}] (role {role!r}) has no 'content'; it may be missing or None "
                "only in a message that has 'tool_calls'"
            )
        plain = {key: value for key, value in _plain(message).items() if value is not None}
        reasoning = next((plain[k] for k in _REASONING_FIELDS if k in plain), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        normalized.append(plain)
    return normalized


def select_chat_template(templates, chat_template=None, tools=None, source="the tokenizer"):
    """Picks the template to render, as transformers' ``get_chat_template`` does.

    Args:
        templates: the model's template: None, a str, or ``{name: template}``
            (from a list of ``{"name", "template"}`` or several ``.jinja`` files).
        chat_template: an explicit template string, or the name of one of
            ``templates``.
        tools: the tools of the call; with several templates and no name, the
            ``"tool_use"`` one is taken when tools are given, else ``"default"``.
        source: where ``templates`` came from, for error messages.

    Returns:
        ``(name, template)``: a label for error messages and the Jinja source.

    Raises:
        ValueError: if there is no template, or several without a default.
    """
    if isinstance(templates, Mapping):
        if chat_template is not None:
            if chat_template in templates:
                return f"the {chat_template!r} chat template of {source}", templates[chat_template]
            return "the chat_template argument", chat_template
        if tools is not None and "tool_use" in templates:
            return f"the 'tool_use' chat template of {source}", templates["tool_use"]
        if "default" in templates:
            return f"the 'default' chat template of {source}", templates["default"]
        raise ValueError(
            f"{source} has several chat templates ({sorted(templates)}) and none is named "
            "'default': pass chat_template= with the name of one or a template string"
        )
    if chat_template is not None:
        return "the chat_template argument", chat_template
    if templates is None:
        raise ValueError(f"no chat template: {source}; pass chat_template= a Jinja template string")
    return f"the chat template of {source}", templates


def render_chat_template(
    template,
    messages,
    tools=None,
    documents=None,
    add_generation_prompt=False,
    name="the chat template",
    **variables,
):
    """Renders a Jinja chat template exactly as transformers' ``apply_chat_template``.

    Args:
        template: the Jinja source.
        messages: the conversation, checked by ``normalize_messages``.
        tools: optional list of tool JSON schemas (dicts).
        documents: optional list of document dicts (for RAG templates).
        add_generation_prompt: whether the template should end with the
            header of a new assistant turn.
        name: how error messages call the template.
        **variables: more template variables (``bos_token``, ``enable_thinking``, ...).

    Returns:
        The rendered prompt string.

    Raises:
        TypeError / ValueError: for bad messages, tools or documents.
        ChatTemplateError: if the template does not compile, touches an
            unsafe attribute, calls ``raise_exception`` (its message is kept)
            or otherwise fails while rendering.

    Example:
        >>> template = "{{ bos_token }}{{ messages[0].content }}{% if add_generation_prompt %}>"
        >>> render_chat_template(template + "{% endif %}", [{"role": "user", "content": "hi"}],
        ...                      add_generation_prompt=True, bos_token="<s>")
        '<s>hi>'
    """
    import jinja2
    from jinja2.exceptions import SecurityError

    messages = normalize_messages(messages)
    for label, items in (("tools", tools), ("documents", documents)):
        if items is None:
            continue
        if not isinstance(items, (list, tuple)) or not all(isinstance(x, Mapping) for x in items):
            raise TypeError(
                f"{label} must be a list of dicts (JSON schemas for tools), got "
                f"{_short_repr(items)}; "
                "to describe a Python function, write its JSON schema (transformers' "
                "get_json_schema makes one from a typed, documented function)"
            )
    if not isinstance(template, str):
        raise TypeError(f"{name} must be a str, got {type(template).__name__}")
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(
            f"{name} is not a valid Jinja template (line {error.lineno}): {error.message}"
        ) from None
    try:
        return compiled.render(
            messages=messages,
            tools=_plain(tools),
            documents=_plain(documents),
            add_generation_prompt=add_generation_prompt,
            **_plain(variables),
        )
    except _RaisedByTemplate as error:
        raise ChatTemplateError(f"{name} raised an exception: {error}") from None
    except SecurityError as error:
        raise ChatTemplateError(
            f"{name} was stopped by the sandbox ({error}); chat templates are untrusted code "
            "and may not reach Python internals"
        ) from None
    except jinja2.TemplateError as error:
        raise ChatTemplateError(f"{name} failed: {type(error).__name__}: {error}") from None
