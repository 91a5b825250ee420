"""Checkpoint-name helpers the family mappings are written with.

A family mapping is `{layer name: {variable path in the layer: entry}}`, where
the path is `variable.path` without the layer's own name ("kernel", "gamma",
"q_dense/bias", "i0_dense/kernel") and an entry is a checkpoint name,
`(name, hook)` or `(name, FusedPart(...))` (see `kerasformers.models.weights`).
Every helper here returns such path-keyed entries for one layer (or, for the
block helpers, `{layer-name suffix: entries}` for one block), from the scope
the checkpoint keeps them under: each family writes its own names by calling
them with its own scopes.

`at` is the sub-layer holding the variables, e.g. "q_dense" inside an
attention layer; "" means the layer's own variables (a plain Dense).

Example:
    >>> hf_linear("bert.pooler.dense")
    {'kernel': ('bert.pooler.dense.weight', 'transpose'), 'bias': 'bert.pooler.dense.bias'}
    >>> google_dense("bert/encoder/layer_0/attention/self/query", at="q_dense")
    {'q_dense/kernel': 'bert/encoder/layer_0/attention/self/query/kernel',
     'q_dense/bias': 'bert/encoder/layer_0/attention/self/query/bias'}
"""

from kerasformers.models.weights import FusedPart

# The sub-layers of our MultiHeadAttention, in q, k, v, output order.
ATTENTION_DENSES = ("q_dense", "k_dense", "v_dense", "o_dense")


def _at(at, variable):
    return f"{at}/{variable}" if at else variable


# ---------------------------------------------------------------- HF (PyTorch) names
def hf_linear(name, at="", bias=True):
    """An nn.Linear `name` as a Keras Dense: HF stores the weight (out, in), we (in, out)."""
    entries = {_at(at, "kernel"): (f"{name}.weight", "transpose")}
    if bias:
        entries[_at(at, "bias")] = f"{name}.bias"
    return entries


def hf_conv1d(name, at="", bias=True):
    """HF's GPT Conv1D `name`: its weight is already (in, out), the Dense layout."""
    entries = {_at(at, "kernel"): f"{name}.weight"}
    if bias:
        entries[_at(at, "bias")] = f"{name}.bias"
    return entries


def hf_fused_qkv(name, bias=True):
    """q, k and v projections as thirds of one Conv1D `name` (GPT's c_attn)."""
    entries = {}
    for part, at in enumerate(ATTENTION_DENSES[:3]):
        entries[_at(at, "kernel")] = (f"{name}.weight", FusedPart(part, 3))
        if bias:
            entries[_at(at, "bias")] = (f"{name}.bias", FusedPart(part, 3))
    return entries


def hf_norm(name, center=True, scale=True):
    """An nn.LayerNorm (or T5's RMS norm, center=False) `name`."""
    entries = {}
    if center:
        entries["beta"] = f"{name}.bias"
    if scale:
        entries["gamma"] = f"{name}.weight"
    return entries


def hf_attention(q, k, v, o, bias=True):
    """Our attention layer from four nn.Linear projections."""
    entries = {}
    for name, at in zip((q, k, v, o), ATTENTION_DENSES, strict=True):
        entries.update(hf_linear(name, at, bias))
    return entries


def hf_feed_forward(inner, outer, bias=True):
    """Our FeedForward (one activation) from two nn.Linear projections."""
    return {**hf_linear(inner, "i_dense", bias), **hf_linear(outer, "o_dense", bias)}


def hf_bert_embeddings(scope, segment=True, position=True, norm=True):
    """HF BERT-style embedding layers under `scope` (e.g. "bert.embeddings.")."""
    return _bert_embeddings(
        lambda table: f"{scope}{table}.weight",
        lambda: hf_norm(scope + "LayerNorm"),
        segment,
        position,
        norm,
    )


def _bert_embeddings(table_name, norm_entries, segment, position, norm):
    """BERT's embedding layers, given how a convention names a table and the norm.

    The token table carries the "embeddings" hook (keep_tokens / compound_tokens).
    """
    mapping = {"Embedding-Token": {"embeddings": (table_name("word_embeddings"), "embeddings")}}
    if segment:
        mapping["Embedding-Segment"] = {"embeddings": table_name("token_type_embeddings")}
    if position:
        mapping["Embedding-Position"] = {"embeddings": table_name("position_embeddings")}
    if norm:
        mapping["Embedding-Norm"] = norm_entries()
    return mapping


def hf_bert_block(scope, bias=True, norms=True):
    """One HF BERT-style block under `scope` (e.g. "bert.encoder.layer.3.").

    Returns {layer-name suffix: entries}, as `google_bert_block` does.
    """
    block = {
        "MultiHeadSelfAttention": hf_attention(
            scope + "attention.self.query",
            scope + "attention.self.key",
            scope + "attention.self.value",
            scope + "attention.output.dense",
            bias=bias,
        ),
        "FeedForward": hf_feed_forward(
            scope + "intermediate.dense", scope + "output.dense", bias=bias
        ),
    }
    if norms:
        block["MultiHeadSelfAttention-Norm"] = hf_norm(scope + "attention.output.LayerNorm")
        block["FeedForward-Norm"] = hf_norm(scope + "output.LayerNorm")
    return block


# ---------------------------------------------------------------- Google (TF) names
def google_dense(scope, at="", bias=True):
    """A tf.layers.dense under `scope` ("bert/pooler/dense" -> ".../kernel", ".../bias")."""
    entries = {_at(at, "kernel"): f"{scope}/kernel"}
    if bias:
        entries[_at(at, "bias")] = f"{scope}/bias"
    return entries


def google_norm(scope, center=True, scale=True):
    """A LayerNorm under `scope` (".../beta", ".../gamma")."""
    entries = {}
    if center:
        entries["beta"] = f"{scope}/beta"
    if scale:
        entries["gamma"] = f"{scope}/gamma"
    return entries


def google_attention(
    scope, parts=("self/query", "self/key", "self/value", "output/dense"), bias=True
):
    """Our attention layer from the four dense layers `scope + part` (BERT's by default)."""
    entries = {}
    for part, at in zip(parts, ATTENTION_DENSES, strict=True):
        entries.update(google_dense(scope + part, at, bias))
    return entries


def google_feed_forward(inner, outer, bias=True):
    """Our FeedForward (one activation) from the dense layers `inner` and `outer`."""
    return {**google_dense(inner, "i_dense", bias), **google_dense(outer, "o_dense", bias)}


def google_bert_embeddings(scope, segment=True, position=True, norm=True):
    """Google BERT-style embedding layers under `scope` (e.g. "bert/embeddings/")."""
    return _bert_embeddings(
        lambda table: scope + table,
        lambda: google_norm(scope + "LayerNorm"),
        segment,
        position,
        norm,
    )


def google_bert_block(
    scope,
    bias=True,
    norms=True,
    attention_norm="attention/output/LayerNorm",
    feed_forward_norm="output/LayerNorm",
):
    """One Google BERT-style block under `scope` (e.g. "bert/encoder/layer_3/").

    Returns {layer-name suffix: entries} for "MultiHeadSelfAttention",
    "MultiHeadSelfAttention-Norm", "FeedForward" and "FeedForward-Norm" (the
    norms only with norms=True); the norm scopes are relative to `scope`.
    """
    block = {
        "MultiHeadSelfAttention": google_attention(scope + "attention/", bias=bias),
        "FeedForward": google_feed_forward(
            scope + "intermediate/dense", scope + "output/dense", bias=bias
        ),
    }
    if norms:
        block["MultiHeadSelfAttention-Norm"] = google_norm(scope + attention_norm)
        block["FeedForward-Norm"] = google_norm(scope + feed_forward_norm)
    return block


def named_block(stem, block):
    """{suffix: entries} of one block -> {f"{stem}-{suffix}": entries}."""
    return {f"{stem}-{suffix}": dict(entries) for suffix, entries in block.items()}
