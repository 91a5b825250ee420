"""Which family and naming a checkpoint's tensor names fit, and which optional heads
it holds, told by the families' own mappings: a family is asked what it would name
its weights (tiny models of it are built where the layers that exist matter);
nothing here guesses from name strings of its own.

Layer indices vary with the depth, so names are compared as templates: every run of
digits becomes "#" ("bert/encoder/layer_11/..." -> "bert/encoder/layer_#/...").

A family *fits* a checkpoint under a naming (Google or HF) when the checkpoint holds
every tensor of the family's smallest model (no optional heads, a tied LM head) and
nothing inside the model body that the family never names: what
`load_weights_from_checkpoint` accepts. Among the families that fit, the one whose
smallest model is largest is reported, with those whose names are just the same
(Google-named BERT and RoBERTa, NEZHA and RoFormer, LLaMA, Mistral and Gemma).
"""

import functools
import inspect
import re
from dataclasses import dataclass, field

# Small enough to build in a few milliseconds; odd sizes are not needed, names are.
_TINY = dict(
    vocab_size=16,
    hidden_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=8,
    max_position=16,
    attention_head_size=4,
    num_decoder_layers=2,
)
_DIGITS = re.compile(r"\d+")
CONVENTIONS = ("google", "hf")


def template(name):
    """A tensor name with its layer indices blanked out."""
    return _DIGITS.sub("#", name)


def arguments(cls):
    """{argument: default} of a builder class over its __init__ chain (the most
    derived declaration wins; required arguments map to `inspect.Parameter.empty`)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    out = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for param in inspect.signature(klass.__init__).parameters.values():
                if param.kind in kinds and param.name != "self":
                    out.setdefault(param.name, param.default)
    return out


def head_options(cls):
    """The builder's optional heads: its with_* arguments that are off by default."""
    return sorted(
        name
        for name, default in arguments(cls).items()
        if name.startswith("with_") and default is not inspect.Parameter.empty and not default
    )


def checkpoint_key(builder, name, convention):
    """The name as the loader compares it: HF names without the base-model prefix."""
    prefix = builder.hf_prefix
    if convention == "hf" and prefix and name.startswith(prefix):
        return name[len(prefix) :]
    return name


def mapped_names(builder, convention):
    """{layer: [checkpoint names]} the builder's `convention` mapping gives the
    layers with weights of its model (what a save in that naming writes)."""
    mapping = (
        builder.variable_mapping() if convention == "google" else builder.hf_variable_mapping()
    )
    out = {}
    for layer_name, entries in mapping.items():
        layer = builder.layers.get(builder.prefix + layer_name)
        if layer is None or not layer.weights:
            continue
        values = entries.values() if isinstance(entries, dict) else entries
        out[layer_name] = sorted({e if isinstance(e, str) else e[0] for e in values})
    return out


def _templates(builder, names, convention):
    return {template(checkpoint_key(builder, n, convention)) for n in names}


@functools.cache
def probe(cls, options=()):
    """A tiny built model of builder class `cls` with `options` (a tuple of (argument,
    value) pairs), or None when the family refuses them.

    Its weights are zeros (`defer_initialization`): only their names matter, and
    random initialisation compiles one program per weight shape on jax.
    """
    builder = _construct(cls, {**_tiny_config(cls), **dict(options)})
    if builder is None:
        return None
    builder.defer_initialization = True
    try:
        builder.build()
    except (ValueError, TypeError):
        return None
    return builder


def head_layers(cls, structure=()):
    """{head option: the weighted layers it adds} for builder class `cls`, from tiny
    models built with and without it (`structure`: options of the real model that
    change which layers exist, such as embedding_size)."""
    base = probe(cls, structure)
    if base is None:
        return {}
    out = {}
    for option in head_options(cls):
        model = probe(cls, structure + ((option, True),))
        if model is None:
            continue
        extra = [
            name
            for name, layer in model.layers.items()
            if layer.weights and name not in base.layers
        ]
        if extra:
            out[option] = (model, sorted(n[len(model.prefix) :] for n in extra))
    return out


def detect_heads(cls, names, structure=()):
    """The head options (with_pool=True, ...) whose weights all of `names` hold.

    Args:
        cls: the builder class.
        names: the checkpoint's tensor names.
        structure: (argument, value) pairs of the real model that decide which
            layers exist (embedding_size when it differs from hidden_size).

    Returns:
        {option: True} for every head the checkpoint holds.
    """
    base = probe(cls, structure)
    if base is None:
        return {}
    convention, _ = base.match_checkpoint(names)  # the loader's own choice
    held = _templates(base, names, convention)
    heads = {}
    for option, (model, layers) in head_layers(cls, structure).items():
        mapping = mapped_names(model, convention)
        wanted = {
            template(checkpoint_key(model, n, convention))
            for layer in layers
            for n in mapping[layer]
        }
        if wanted <= held:
            heads[option] = True
    return heads


# ---------------------------------------------------------------- family detection
@dataclass
class _Family:
    name: str
    cls: type
    largest: object  # a builder (not built) naming every weight the family has
    full: dict = field(default_factory=dict)  # convention -> templates ever written


def _tiny_config(cls):
    accepted = arguments(cls)
    config = {k: v for k, v in _TINY.items() if k in accepted}
    if accepted.get("hidden_act") is inspect.Parameter.empty:
        config["hidden_act"] = "gelu"
    return config


def _all_names(builder, convention):
    """Every name the builder's mapping holds, whether or not its model has the layer
    (a mapping names every optional head; the builder need not be built)."""
    mapping = (
        builder.variable_mapping() if convention == "google" else builder.hf_variable_mapping()
    )
    names = set()
    for entries in mapping.values():
        values = entries.values() if isinstance(entries, dict) else entries
        names.update(e if isinstance(e, str) else e[0] for e in values)
    return {template(checkpoint_key(builder, n, convention)) for n in names}


@functools.cache
def _families():
    """Every family (one per builder class) with the names it can ever write. Only
    mappings are read here (no model is built): building waits for `_core`."""
    from kerasformers.models import MODELS

    out, seen = [], set()
    for name, cls in MODELS.items():
        if cls in seen:
            continue  # "t5" is "t5.1.0"
        seen.add(cls)
        config = _tiny_config(cls)
        largest = None
        if "tie_word_embeddings" in arguments(cls):  # an untied LM head: one name more
            largest = _construct(cls, {**config, "tie_word_embeddings": False})
        largest = largest or _construct(cls, config)
        if largest is None:
            continue
        family = _Family(name, cls, largest)
        family.full = {c: _all_names(largest, c) for c in CONVENTIONS}
        out.append(family)
    return out


def _construct(cls, config):
    try:
        return cls(**config)
    except (ValueError, TypeError):
        return None


@functools.cache
def _core(cls, convention):
    """Templates of the names the family's smallest model writes: no optional head,
    the LM head tied where the family can tie it."""
    smallest = None
    if "tie_word_embeddings" in arguments(cls):
        smallest = probe(cls, (("tie_word_embeddings", True),))
    smallest = smallest or probe(cls)
    if smallest is None:
        return frozenset()
    return frozenset(
        template(checkpoint_key(smallest, n, convention))
        for names in mapped_names(smallest, convention).values()
        for n in names
    )


@dataclass
class Match:
    """What `detect_family` found.

    Attributes:
        family: the model= name that fits best, or None ("unknown").
        naming: "google" or "hf" (None when unknown).
        also_fits: other families whose names fit just as well.
        unused: checkpoint tensors the family does not load (optimizer slots,
            global_step, heads of another task).
    """

    family: str | None = None
    naming: str | None = None
    also_fits: list = field(default_factory=list)
    unused: list = field(default_factory=list)


def _is_ignored(builder, name):
    return any(re.search(p, name) for p in builder.ignored_variable_patterns)


def fits(family, names, convention):
    """(core tensors held, tensors explained) if `family` fits `names`, else None."""
    builder = family.largest
    keys = {n: checkpoint_key(builder, n, convention) for n in names}
    kept = {n: k for n, k in keys.items() if not _is_ignored(builder, n)}
    held = {template(k) for k in kept.values()}
    full = family.full[convention]
    # Cheap tests first: only a family that could fit has a model built (for _core).
    body = {template(k) for k in kept.values() if k.startswith(builder.body_prefixes)}
    if not held & full or not body <= full:
        return None
    core = _core(family.cls, convention)
    if not core or not core <= held:
        return None
    return len(core), len(held & full)


def detect_family(names, model=None):
    """The family and naming whose mappings fit the tensor `names` best.

    Args:
        names: the checkpoint's tensor names.
        model: a model= name to check instead of searching (e.g. from a config's
            model_type); it is reported even when its names do not fit.

    Returns:
        A `Match`.
    """
    candidates = _families()
    if model is not None:
        cls = _model_class(model)
        candidates = [f for f in candidates if f.cls is cls]
    scored = []
    for family in candidates:
        for convention in ("hf", "google"):  # an HF-only family's "Google" names are HF's
            score = fits(family, names, convention)
            if score is not None:
                scored.append((score, family, convention))
                break
    if not scored:
        return Match(family=model)
    best = max(score for score, _, _ in scored)
    winners = [(f, c) for score, f, c in scored if score == best]
    family, convention = winners[0]
    full = family.full[convention]
    unused = [
        n for n in names if template(checkpoint_key(family.largest, n, convention)) not in full
    ]
    return Match(
        family=model or family.name,
        naming=convention,
        also_fits=[f.name for f, _ in winners[1:]],
        unused=unused,
    )


def _model_class(model):
    from kerasformers.models import MODELS

    return MODELS[model]
