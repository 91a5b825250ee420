"""The T5 versions and the options that must agree with them (feed-forward kind,
LM head): translated from HF's config spelling and checked in one place."""

from kerasformers.backend import get_activation

VERSIONS = ("t5.1.0", "t5.1.1", "mt5.1.1")


def _feed_forward_activation(feed_forward_proj):
    """HF's feed_forward_proj ("relu", "gated-gelu", "gated-<act>") -> our hidden_act."""
    parts = str(feed_forward_proj).split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    if len(parts) > 2 or (len(parts) == 2 and not gated) or not parts[-1]:
        raise ValueError(
            f"feed_forward_proj {feed_forward_proj!r} is not supported; use 'relu', "
            "'gated-gelu' or another '<activation>' / 'gated-<activation>'"
        )
    # HF's spelling: "gated-gelu" means the tanh GELU, a bare "gelu" the exact one.
    name = {"gelu": "gelu_new" if gated else "gelu_erf"}.get(parts[-1], parts[-1])
    try:
        get_activation(name)
    except ValueError as err:
        raise ValueError(
            f"feed_forward_proj {feed_forward_proj!r} names an unknown activation {parts[-1]!r}"
        ) from err
    return [name, "linear"] if gated else name


def hf_feed_forward_proj(hidden_act):
    """Our hidden_act -> HF's feed_forward_proj: the inverse of `_feed_forward_activation`.

    Raises:
        ValueError: an activation HF's T5 cannot name (a callable, a gated pair
            whose second part is not linear).
    """
    gated = isinstance(hidden_act, (list, tuple))
    name = hidden_act[0] if gated else hidden_act
    if not isinstance(name, str) or (gated and (len(hidden_act) != 2 or hidden_act[1] != "linear")):
        raise ValueError(
            f"hidden_act {hidden_act!r} has no HF feed_forward_proj spelling ('relu', "
            "'gated-gelu', or another '<activation>' / 'gated-<activation>')"
        )
    activation = get_activation(name)
    # HF's spelling: "gated-gelu" means the tanh GELU, a bare "gelu" the exact one.
    if activation is get_activation("gelu_new" if gated else "gelu_erf"):
        name = "gelu"
    elif activation is get_activation("gelu_erf" if gated else "gelu_new"):
        raise ValueError(
            f"hidden_act {hidden_act!r}: HF's T5 has the tanh GELU only gated and the exact "
            "one only ungated"
        )
    return f"gated-{name}" if gated else name


def check_version_options(
    who, version, fixed_version, hidden_act, feed_forward_proj, scaled, option
):
    """Checks the options that must agree with the version; returns (version, hidden_act).

    `scaled` is HF's scale_decoder_outputs (transformers >= 5, whose saved
    tie_word_embeddings is always True) or else tie_word_embeddings, named by
    `option`: True means the tied, scaled LM head of t5.1.0.
    """
    if version not in VERSIONS:
        raise ValueError(f"{who}: unknown version {version!r}; available: {list(VERSIONS)}")
    if fixed_version and version != fixed_version:
        raise ValueError(f"{who} is {fixed_version!r}, but version={version!r} was given")
    gated = version != "t5.1.0"
    other = "t5.1.0" if gated else "t5.1.1 / mt5.1.1"
    if feed_forward_proj is not None:
        activation = _feed_forward_activation(feed_forward_proj)
        if isinstance(activation, list) != gated:
            raise ValueError(
                f"{who}: feed_forward_proj={feed_forward_proj!r} does not fit {version} "
                f"(which uses {'gated-gelu' if gated else 'relu'}); use model {other} for "
                "this config"
            )
        hidden_act = hidden_act or activation
    if hidden_act is None:
        hidden_act = ["gelu_new", "linear"] if gated else "relu"
    count = len(hidden_act) if isinstance(hidden_act, (list, tuple)) else 1
    if count != (2 if gated else 1):
        wanted = "a gated pair of hidden_act such as ['gelu_new', 'linear']"
        raise ValueError(
            f"{who}: {version} needs {wanted if gated else 'a single hidden_act'}, "
            f"got {hidden_act!r}"
        )
    if scaled is not None and bool(scaled) == gated:
        head = "separate and unscaled" if gated else "the scaled, tied token table"
        raise ValueError(
            f"{who}: {option}={scaled!r} does not fit {version}, whose LM head is {head}; "
            f"use model {other} for this config"
        )
    return version, hidden_act
