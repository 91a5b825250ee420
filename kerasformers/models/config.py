"""Config files: reading them, translating foreign keys onto builder arguments, and
checking the merged arguments before a builder sees them."""

import inspect
import json
import math
import numbers
import os

import numpy as np

# Foreign config keys -> our (bert4keras) argument names. The one place they are
# translated (STYLE.md rule 6); a key already given in our spelling wins.
CONFIG_KEY_ALIASES = {
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "layer_norm_eps": "layer_norm_epsilon",
    # OpenAI GPT / GPT-2 (HF config.json)
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "n_positions": "max_position",
    "activation_function": "hidden_act",
    "afn": "hidden_act",
    "resid_pdrop": "dropout_rate",
    "attn_pdrop": "attention_dropout_rate",
    # T5 / mT5 (HF config.json; dropout_rate and layer_norm_epsilon are ours already)
    "d_model": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "d_ff": "intermediate_size",
    "d_kv": "attention_head_size",
    # LLaMA-layout decoders (HF config.json)
    "rms_norm_eps": "layer_norm_epsilon",
    "head_dim": "attention_head_size",
    "attention_dropout": "attention_dropout_rate",
    "attention_bias": "projection_bias",
}


def translate_config(config):
    """Maps a Google `bert_config.json` / HF `config.json` dict onto builder kwargs."""
    out = dict(config)
    for foreign, ours in CONFIG_KEY_ALIASES.items():
        if foreign in out:
            value = out.pop(foreign)
            out.setdefault(ours, value)
    # The dtype a checkpoint was saved in (HF's "dtype" / "torch_dtype") is not the
    # policy to build with: that is the caller's dtype= or Keras' global policy.
    out.pop("dtype", None)
    out.pop("torch_dtype", None)
    position_type = out.pop("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type={position_type!r} is not supported by BERT/RoBERTa "
            "here (only 'absolute'); use a family with relative positions (e.g. nezha)"
        )
    if out.get("model_type") == "roberta" and _is_int(out.get("max_position")):
        # HF RoBERTa reserves the first padding_idx + 1 = 2 rows of its table.
        out["max_position"] -= 2
    if "rope_parameters" in out:
        # transformers 5 keeps theta and scaling in one dict; older files split them.
        rope = dict(out.pop("rope_parameters") or {})
        if "rope_theta" in rope:
            out.setdefault("rope_theta", rope.pop("rope_theta"))
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            out.setdefault("rope_scaling", rope)
    if out.get("model_type") == "gemma" and out.get("hidden_activation"):
        # Gemma's checkpoints name the GeGLU activation here (hidden_act is stale).
        out["hidden_act"] = out.pop("hidden_activation")
    if out.get("model_type") == "openai-gpt":
        # HF OpenAI GPT: afn "gelu" is the tanh form, and token types are looked
        # up in the token table (CDial-GPT feeds speaker tokens through them).
        if out.get("hidden_act") == "gelu":
            out["hidden_act"] = "gelu_new"
        out.setdefault("shared_segment_embeddings", True)
    return out


# The keys each kind of foreign config writes our arguments under: the inverse of
# CONFIG_KEY_ALIASES, one spelling per kind (every key listed is one of its aliases).
# Arguments without an entry keep our name, which those configs share (hidden_size,
# vocab_size, ...).
CONFIG_SPELLINGS = {
    # Google bert_config.json / albert_config.json, and HF's BERT-family config.json
    "bert": (
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
    ),
    "gpt2": (
        "n_embd",
        "n_layer",
        "n_head",
        "n_inner",
        "n_positions",
        "activation_function",
        "resid_pdrop",
        "attn_pdrop",
    ),
    "openai-gpt": (
        "n_embd",
        "n_layer",
        "n_head",
        "n_positions",
        "afn",
        "resid_pdrop",
        "attn_pdrop",
    ),
    "t5": ("d_model", "num_layers", "num_heads", "d_ff", "d_kv"),
    "llama": (
        "max_position_embeddings",
        "rms_norm_eps",
        "head_dim",
        "attention_dropout",
        "attention_bias",
    ),
}


def export_config(arguments, spelling, model_type=None):
    """Builder arguments -> a foreign config dict: the inverse of `translate_config`.

    `translate_config(export_config(args, ...))` gives `args` back, but for
    arguments that are None (the default: left out) and callables (refused).

    Args:
        arguments: {our argument name: value}.
        spelling: which keys to write, a key of `CONFIG_SPELLINGS` ("bert" for
            Google's bert_config.json and HF's BERT-family configs, "gpt2", ...).
        model_type: the HF `model_type` to record, which also undoes the value
            conventions `translate_config` applies for it (HF RoBERTa's two extra
            position rows, OpenAI GPT's "gelu"); None for a Google config.

    Returns:
        The config dict (JSON-serialisable).

    Raises:
        ValueError: a value a config file cannot hold (a callable activation).

    Example:
        >>> export_config({"dropout_rate": 0.1, "max_position": 512}, "bert")
        {'hidden_dropout_prob': 0.1, 'max_position_embeddings': 512}
    """
    keys = {CONFIG_KEY_ALIASES[key]: key for key in CONFIG_SPELLINGS[spelling]}
    out = {}
    for name, value in arguments.items():
        if value is None:
            continue  # "the default", which a config says by leaving the key out
        if callable(value):
            raise ValueError(
                f"cannot write {name}={value!r} into a config file: give it by name (e.g. "
                "hidden_act='gelu') to save a config"
            )
        if isinstance(value, tuple):
            value = list(value)
        out[keys.get(name, name)] = value
    positions = keys.get("max_position", "max_position")
    if model_type == "roberta" and _is_int(out.get(positions)):
        out[positions] += 2  # HF RoBERTa's table holds padding_idx + 1 rows more
    activation = keys.get("hidden_act", "hidden_act")
    if model_type == "openai-gpt" and out.get(activation) == "gelu_new":
        out[activation] = "gelu"  # HF OpenAI GPT's "gelu" is the tanh form
    if model_type is not None:
        out["model_type"] = model_type
    return out


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def load_config(config_path):
    """Reads a config given as a JSON path, a dict or None; a file must hold an object."""
    if config_path is None:
        return {}
    if isinstance(config_path, dict):
        return dict(config_path)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"config file not found: {config_path}")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"config file {config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(
            f'config file {config_path} must hold a JSON object ({{"key": value, ...}}), '
            f"got a JSON {_JSON_TYPES.get(type(config), type(config).__name__)}"
        )
    return config


# ------------------------------------------------------------------ validation
# Integer arguments of the builders and the least value each may take (None: any int).
_INT_MINIMUM = {
    "vocab_size": 1,
    "hidden_size": 1,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "intermediate_size": 1,
    "max_position": 1,
    "embedding_size": 1,
    "attention_head_size": 1,
    "attention_key_size": 1,
    "sequence_length": 1,
    "segment_vocab_size": 0,
    "num_decoder_layers": 1,
    "max_relative_position": 1,
    "relative_attention_num_buckets": 1,
    "relative_attention_max_distance": 1,
    "num_hidden_groups": 1,
    "num_key_value_heads": 1,
    "sliding_window": 1,
    "inner_group_num": 1,
    "pad_token_id": None,
    "decoder_start_token_id": 0,
}
# Real-valued arguments: (allowed values in words, test on a finite number).
_REAL_RULES = {
    "layer_norm_epsilon": ("a finite number > 0", lambda v: v > 0),
    "dropout_rate": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "attention_dropout_rate": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "initializer_range": ("a finite number >= 0", lambda v: v >= 0),
    "rope_theta": ("a finite number > 0", lambda v: v > 0),
}
# None means "the default" for these whatever the builder's signature says
# (the builders read them as `value or 0`).
_NONE_MEANS_DEFAULT = {
    "segment_vocab_size",
    "pad_token_id",
    "decoder_start_token_id",
    "dropout_rate",
    "attention_dropout_rate",
    "sliding_window",  # None: no window
}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _declared_defaults(builder):
    """{argument: default} from the most derived __init__ naming it (required: absent)."""
    defaults = {}
    for klass in builder.__mro__:
        if "__init__" not in vars(klass):
            continue
        for param in inspect.signature(klass.__init__).parameters.values():
            if param.name not in defaults and param.kind != param.VAR_KEYWORD:
                defaults[param.name] = param.default
    return {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}


class _Sources:
    """Says where each merged argument came from, for error messages."""

    def __init__(self, config, config_name, explicit):
        self.config = config or {}
        self.config_name = config_name
        self.explicit = set(explicit)

    def origin(self, key):
        """The key as spelled in the config file, or None if it is not from there."""
        if key in self.explicit:
            return None
        if key in self.config:
            return key
        for foreign, ours in CONFIG_KEY_ALIASES.items():
            if ours == key and foreign in self.config:
                return foreign
        return None

    def where(self, key):
        return "argument" if self.origin(key) is None else self.config_name

    def name(self, key):
        origin = self.origin(key)
        return key if origin in (None, key) else f"{origin} ({key})"

    def label(self, key):
        """'argument hidden_size' or 'config.json: n_embd (hidden_size)'."""
        if self.origin(key) is None:
            return f"argument {self.name(key)}"
        return f"{self.config_name}: {self.name(key)}"


def _got(value):
    """The value for a message, with its type where the repr hides a wrong one."""
    if isinstance(value, (str, float, bool, np.bool_, np.floating)):
        return f"{value!r} ({type(value).__name__})"
    return repr(value)


def validate_config(arguments, builder=None, config=None, config_name="config", explicit=()):
    """Checks merged builder arguments, naming the key, the value and what is allowed.

    Called by `build_transformer_model` on the config file's translated keys
    merged with the keyword arguments, before the builder is constructed, so a
    bad config fails here instead of deep inside a layer (or not at all: a
    negative layer count used to build a model with no blocks). Arguments the
    rules do not know are left to the builder.

    Args:
        arguments: {builder argument: value}, as the builder will receive them.
        builder: the builder class; where its own default of an argument is
            None, None is accepted for it.
        config: the config as read from its file (untranslated), to say which
            spelling of a key a bad value came from.
        config_name: the config file's path (or "config" for a dict), for messages.
        explicit: names of the arguments passed as keyword arguments.

    Raises:
        TypeError: a value of the wrong type (a string or a float where an int
            is expected, a bool for a number).
        ValueError: a value out of range, `hidden_size` not a multiple of
            `num_attention_heads`, or a `keep_tokens` / `compound_tokens` id
            outside the vocabulary.

    Example:
        >>> validate_config({"num_hidden_layers": -1}, config={"num_hidden_layers": -1},
        ...                 config_name="config.json")
        Traceback (most recent call last):
        ValueError: config.json: num_hidden_layers must be an integer >= 1, got -1
    """
    sources = _Sources(config, config_name, explicit)
    defaults = _declared_defaults(builder) if builder is not None else None

    def none_allowed(key):
        if key in _NONE_MEANS_DEFAULT or defaults is None:
            return True
        return key in defaults and defaults[key] is None

    for key, value in arguments.items():
        if value is None and none_allowed(key):
            continue
        if key in _INT_MINIMUM:
            minimum = _INT_MINIMUM[key]
            allowed = "an integer" if minimum is None else f"an integer >= {minimum}"
            if not _is_int(value):
                raise TypeError(f"{sources.label(key)} must be {allowed}, got {_got(value)}")
            if minimum is not None and value < minimum:
                raise ValueError(f"{sources.label(key)} must be {allowed}, got {value!r}")
        elif key in _REAL_RULES:
            allowed, test = _REAL_RULES[key]
            if not _is_real(value):
                raise TypeError(f"{sources.label(key)} must be {allowed}, got {_got(value)}")
            if not (math.isfinite(value) and test(value)):
                raise ValueError(f"{sources.label(key)} must be {allowed}, got {value!r}")

    hidden, heads = arguments.get("hidden_size"), arguments.get("num_attention_heads")
    if _is_int(hidden) and _is_int(heads) and hidden % heads:
        if arguments.get("attention_head_size") is None:
            raise ValueError(
                f"{sources.name('hidden_size')} = {hidden} ({sources.where('hidden_size')}) "
                f"must be a multiple of {sources.name('num_attention_heads')} = {heads} "
                f"({sources.where('num_attention_heads')}), or attention_head_size must be "
                "given to set the width of each head"
            )

    kv_heads = arguments.get("num_key_value_heads")
    if _is_int(heads) and _is_int(kv_heads) and heads % kv_heads:
        raise ValueError(
            f"{sources.name('num_key_value_heads')} = {kv_heads} "
            f"({sources.where('num_key_value_heads')}) must divide "
            f"{sources.name('num_attention_heads')} = {heads} "
            f"({sources.where('num_attention_heads')}): each key/value head serves a whole "
            "group of query heads"
        )

    vocab_size = arguments.get("vocab_size")
    limit = vocab_size if _is_int(vocab_size) else None
    keep = arguments.get("keep_tokens")
    if keep is not None:
        _check_ids(keep, limit, sources.label("keep_tokens"), "the vocab_size before keep_tokens")
        limit = len(keep)
    compound = arguments.get("compound_tokens")
    if compound is not None:
        # load_embeddings averages rows of the table keep_tokens has already pruned.
        why = "the vocabulary kept by keep_tokens" if keep is not None else "vocab_size"
        _check_compound(compound, limit, sources.label("compound_tokens"), why)


def _as_sequence(value, label, what):
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise TypeError(
                f"{label} must be a flat list of {what}, got an array of shape {value.shape}"
            )
        return value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{label} must be a list of {what}, got {type(value).__name__}")
    return value


def _check_ids(ids, limit, label, why):
    """Each id an int in [0, limit); names the first bad id and its position."""
    ids = _as_sequence(ids, label, "token ids (ints)")
    if not ids:
        raise ValueError(f"{label} must list at least one token id, got an empty list")
    for position, token in enumerate(ids):
        if not _is_int(token):
            raise TypeError(
                f"{label}: token id {_got(token)} at position {position} is not an integer"
                + (f" in [0, {limit}) ({why})" if limit is not None else "")
            )
        if token < 0 or (limit is not None and token >= limit):
            bound = f"[0, {limit}) ({why})" if limit is not None else ">= 0"
            raise ValueError(f"{label}: token id {token} at position {position} is outside {bound}")


def _check_compound(compound, limit, label, why):
    """compound_tokens: entries are lists of ids or (ids, weights) tuples."""
    if not isinstance(compound, (list, tuple)):
        raise TypeError(
            f"{label} must be a list of new tokens (each a list of ids or an (ids, weights) "
            f"tuple), got {type(compound).__name__}"
        )
    for index, item in enumerate(compound):
        entry = f"{label}[{index}]"
        if isinstance(item, list):
            _check_ids(item, limit, entry, why)
            continue
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                f"{entry} must be a list of token ids or an (ids, weights) tuple, got {item!r}"
            )
        ids, weights = item
        _check_ids(ids, limit, f"{entry} ids", why)
        weights = _as_sequence(weights, f"{entry} weights", "numbers")
        if len(weights) != len(ids):
            raise ValueError(
                f"{entry} has {len(ids)} ids but {len(weights)} weights; each id needs a weight"
            )
        for position, weight in enumerate(weights):
            if not _is_real(weight):
                raise TypeError(
                    f"{entry} weights: {_got(weight)} at position {position} is not a number"
                )
            if not math.isfinite(weight):
                raise ValueError(
                    f"{entry} weights: {weight!r} at position {position} is not a finite number"
                )
        if sum(weights) == 0:
            raise ValueError(f"{entry} weights {list(weights)} sum to 0; they must not")
