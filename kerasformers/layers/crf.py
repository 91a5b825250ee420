"""Linear-chain output layers for sequence labelling: CRF and (bidirectional) MEMM.

Both layers are "loss layers" in bert4keras' sense: in the forward pass they only
pass the emission scores through (padded positions set to -infinity), and the
model is trained with their `sparse_loss` / `dense_loss` methods:

    crf = ConditionalRandomField(lr_multiplier=100)
    output = crf(keras.layers.Dense(num_labels)(hidden))
    model.compile(loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])

Padding reaches the losses through the values themselves (a Keras loss function
sees only `y_true` and `y_pred`): a position whose scores are all below -1e6 is
padding. The layers write that value wherever their Keras mask (or an explicit
`mask=`) is 0. The chain runs over the real positions only, in order, wherever
the padding sits (end, start or inside the sequence).
"""

import keras
from keras import ops

from kerasformers.backend import sequence_masking

# Emission rows whose every score is below this are padding (what `call` writes
# at masked positions is -infinity()).
_PADDING_THRESHOLD = -1e6


def _check_emissions(layer, y_pred, num_labels=None):
    """Static checks of a (batch, seq_len, num_labels) emission tensor."""
    shape = tuple(y_pred.shape)
    if len(shape) != 3:
        raise ValueError(
            f"{layer.name}: expects emission scores of shape (batch, seq_len, num_labels), "
            f"got rank {len(shape)} with shape {shape}"
        )
    if num_labels is not None and shape[-1] is not None and shape[-1] != num_labels:
        raise ValueError(
            f"{layer.name}: the layer was built for {num_labels} labels but the scores have "
            f"{shape[-1]} (shape {shape})"
        )


def _sparse_labels(layer, y_true, y_pred):
    """Integer labels reshaped to y_pred's (batch, seq_len).

    Keras' loss wrapper hands labels over as floats and may add a trailing axis
    of 1 to match y_pred's rank, as it would for sparse categorical losses.
    """
    shape = tuple(y_true.shape)
    if len(shape) == 3 and shape[-1] == 1:
        shape = shape[:2]
    if len(shape) != 2:
        raise ValueError(
            f"{layer.name}: sparse labels must have shape (batch, seq_len), got "
            f"{tuple(y_true.shape)} (one-hot labels go to dense_loss / dense_accuracy)"
        )
    for got, want in zip(shape, y_pred.shape[:2], strict=True):
        if got is not None and want is not None and got != want:
            raise ValueError(
                f"{layer.name}: labels of shape {tuple(y_true.shape)} do not match scores of "
                f"shape {tuple(y_pred.shape)}"
            )
    return ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:2]), "int32")


def _check_dense_labels(layer, y_true, num_labels):
    if len(y_true.shape) != 3 or y_true.shape[-1] not in (None, num_labels):
        raise ValueError(
            f"{layer.name}: one-hot labels must have shape (batch, seq_len, {num_labels}), "
            f"got {tuple(y_true.shape)}"
        )


def _dense_labels(layer, y_true, num_labels):
    """Argmax of one-hot labels, after checking their label axis."""
    _check_dense_labels(layer, y_true, num_labels)
    return ops.argmax(y_true, axis=-1)


def _float32(x):
    # Convert first: Keras' torch backend turns a numpy bfloat16 array (what
    # predict returns under mixed_bfloat16) into bfloat16 whatever dtype cast asks.
    return ops.cast(ops.convert_to_tensor(x), "float32")


def _padding_mask(y_pred):
    """(batch, seq_len) bool: True at real positions (see the module docstring)."""
    return ops.all(ops.greater(y_pred, _PADDING_THRESHOLD), axis=-1)


def _real_first(mask, *tensors):
    """Moves the real positions of each row to the front, keeping their order.

    The chain then runs over the sequence with its padding cut out, wherever
    the padding was (end, start or inside). Returns the tensors and the mask,
    reordered, as (*tensors, mask).
    """
    seq_len = ops.shape(mask)[1]
    # Real position t sorts by t, padding by t + seq_len: a stable compaction.
    key = ops.arange(seq_len)[None, :] + seq_len * (1 - ops.cast(mask, "int32"))
    order = ops.argsort(key, axis=1)  # (batch, seq)
    out = []
    for x in (*tensors, mask):
        index = order if len(x.shape) == 2 else ops.expand_dims(order, -1)
        index = ops.broadcast_to(index, ops.shape(order) + tuple(ops.shape(x)[2:]))
        out.append(ops.take_along_axis(x, index, axis=1))
    return out


def _emission_accuracy(labels, y_pred):
    """Share of real positions whose highest emission is the gold label."""
    hits = ops.equal(labels, ops.cast(ops.argmax(y_pred, -1), "int32"))
    return _masked_mean(ops.cast(hits, "float32"), _padding_mask(y_pred))


def _masked_mean(values, mask):
    """Mean of (batch, seq_len) `values` over the positions where `mask` holds."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


class _ChainLayer(keras.layers.Layer):
    """Shared plumbing: mask pass-through in call, lr_multiplier'd weights."""

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        if lr_multiplier <= 0:
            raise ValueError(
                f"{type(self).__name__}: lr_multiplier must be > 0, got {lr_multiplier}"
            )
        self.lr_multiplier = lr_multiplier
        self.supports_masking = True

    def _add_scaled_weight(self, name, shape):
        # bert4keras' learning-rate multiplier: the variable holds w / m and the
        # layer uses m * variable, so w moves m times faster under Adam-like
        # optimizers (whose steps ignore the gradient's scale), m^2 under SGD.
        glorot = keras.initializers.GlorotUniform()

        def initializer(shape, dtype=None):
            return glorot(shape, dtype) / self.lr_multiplier

        return self.add_weight(name=name, shape=shape, initializer=initializer)

    def _scaled(self, weight):
        if self.lr_multiplier != 1:
            return self.lr_multiplier * weight
        return weight

    def _num_labels(self):
        if not self.built:
            raise ValueError(
                f"{self.name}: call the layer on its (batch, seq_len, num_labels) input before "
                "using its losses or metrics"
            )
        return self._label_count

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name}: expects emission scores of shape (batch, seq_len, num_labels) "
                f"with a known num_labels, got {tuple(input_shape)}"
            )
        self._label_count = int(input_shape[-1])

    def call(self, inputs, mask=None):
        _check_emissions(self, inputs, self._label_count)
        return sequence_masking(inputs, mask, "-inf", 1)

    def compute_mask(self, inputs, mask=None):
        # The padding now lives in the values; a Keras mask on the output would
        # make Keras weight the (batch,)-shaped loss by a (batch, seq_len) mask.
        return None

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}


@keras.saving.register_keras_serializable(package="kerasformers")
class ConditionalRandomField(_ChainLayer):
    """Linear-chain CRF over emission scores, trained through its loss methods.

    The layer holds the (num_labels, num_labels) transition matrix `trans`
    (`trans[i, j]` scores label i followed by label j) and returns its input,
    with the positions masked out by the Keras mask set to -infinity.
    `sparse_loss` (integer labels) and `dense_loss` (one-hot labels) give the
    negative log-likelihood of the gold path per sequence; padded positions take
    no part. Decode with `ViterbiDecoder(ops.convert_to_numpy(crf.trans))`.

    Args:
        lr_multiplier: learning-rate multiplier of `trans` (bert4keras' trick for
            a transition matrix that should learn faster than a fine-tuned
            encoder; 100-1000 are common).

    Example:
        >>> crf = ConditionalRandomField(lr_multiplier=100)
        >>> scores = crf(keras.layers.Dense(num_labels)(hidden))
        >>> model = keras.Model(inputs, scores)
        >>> model.compile("adam", loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])

    Reference:
        https://kexue.fm/archives/5542 (CRF in pure Keras);
        Lafferty et al. 2001, "Conditional Random Fields".
    """

    def build(self, input_shape):
        super().build(input_shape)
        self._trans = self._add_scaled_weight("trans", (self._label_count,) * 2)

    @property
    def trans(self):
        """The transition matrix in use (the stored variable times lr_multiplier)."""
        return self._scaled(self._trans)

    def target_score(self, y_true, y_pred):
        """Unnormalised score of the gold paths, (batch,).

        y_true: one-hot labels, zero rows at padding; y_pred: emissions with the
        real positions first (see `_real_first`).
        """
        # (batch, seq, labels) x (batch, seq, labels) -> (batch,)
        point = ops.einsum("bni,bni->b", y_true, y_pred)
        # (batch, seq-1, labels) x (labels, labels) x (batch, seq-1, labels) -> (batch,);
        # the zero label rows of padding drop its transitions.
        trans = ops.cast(self.trans, y_pred.dtype)
        trans = ops.einsum("bni,ij,bnj->b", y_true[:, :-1], trans, y_true[:, 1:])
        return point + trans

    def log_normalizer(self, y_pred, mask):
        """log Z of each sequence by the forward algorithm, (batch,).

        A scan over time carries log alpha (batch, labels), which padding
        positions (after the real ones, see `_real_first`) leave unchanged.
        """
        trans = ops.expand_dims(ops.cast(self.trans, y_pred.dtype), 0)  # (1, labels, labels)

        def step(alpha, inputs):
            emission, real, first = inputs  # (batch, labels), (batch, 1), ()
            # (batch, labels, 1) + (1, labels, labels) -> logsumexp over the previous label
            moved = ops.logsumexp(ops.expand_dims(alpha, 2) + trans, axis=1)
            new = ops.where(first, emission, moved + emission)
            return ops.where(real, new, alpha), None

        # time-major: (seq, batch, labels), (seq, batch, 1) and (seq,). The scan
        # starts at position 0 (not 1 with alpha_0 as init) because Keras' torch
        # scan fails on an empty sequence.
        xs = (
            ops.transpose(y_pred, (1, 0, 2)),
            ops.transpose(mask[..., None], (1, 0, 2)),
            ops.equal(ops.arange(ops.shape(y_pred)[1]), 0),
        )
        alpha, _ = ops.scan(step, ops.zeros_like(y_pred[:, 0]), xs)
        return ops.logsumexp(alpha, axis=-1)

    def dense_loss(self, y_true, y_pred):
        """Negative log-likelihood per sequence, (batch,); y_true one-hot."""
        num_labels = self._num_labels()
        _check_emissions(self, y_pred, num_labels)
        _check_dense_labels(self, y_true, num_labels)
        return self._loss(_float32(y_true), y_pred)

    def sparse_loss(self, y_true, y_pred):
        """Negative log-likelihood per sequence, (batch,); y_true integer labels."""
        num_labels = self._num_labels()
        _check_emissions(self, y_pred, num_labels)
        labels = _sparse_labels(self, y_true, y_pred)
        return self._loss(ops.one_hot(labels, num_labels, dtype="float32"), y_pred)

    def _loss(self, y_true, y_pred):
        # float32 whatever the compute dtype: log Z sums many scores.
        y_pred = _float32(y_pred)
        mask = _padding_mask(y_pred)
        y_true, y_pred, mask = _real_first(mask, y_true, y_pred)
        y_pred = ops.where(mask[..., None], y_pred, 0.0)
        y_true = y_true * ops.cast(mask[..., None], "float32")
        loss = self.log_normalizer(y_pred, mask) - self.target_score(y_true, y_pred)
        # An all-padding row has no path and contributes nothing.
        return ops.where(mask[:, 0], loss, 0.0)

    def dense_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the emission argmax on real positions; y_true one-hot."""
        return self.sparse_accuracy(_dense_labels(self, y_true, self._num_labels()), y_pred)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the emission argmax on real positions (a rough
        training signal, as in bert4keras: it ignores the transitions)."""
        _check_emissions(self, y_pred, self._num_labels())
        return _emission_accuracy(_sparse_labels(self, y_true, y_pred), y_pred)


@keras.saving.register_keras_serializable(package="kerasformers")
class MaximumEntropyMarkovModel(_ChainLayer):
    """Bidirectional maximum-entropy Markov model: a faster, simpler stand-in for CRF.

    Each token is a softmax over `(emission + transition from the neighbour's
    gold label) / 2`, normalised locally (no forward algorithm). The loss
    averages the left-to-right model (neighbour = previous token, `trans[prev]`)
    and the right-to-left one (neighbour = next token, `trans[:, next]`) over the
    real tokens. The first real token (the last, right to left) has no neighbour
    and uses its emission alone.

    Args:
        lr_multiplier: learning-rate multiplier of the transition weights.
        hidden_dim: if set, the transition matrix is factorised as
            `l_trans @ r_trans.T` with two (num_labels, hidden_dim) matrices,
            for label sets too large for a full matrix.

    Example:
        >>> memm = MaximumEntropyMarkovModel(lr_multiplier=100)
        >>> scores = memm(keras.layers.Dense(num_labels)(hidden))
        >>> model.compile("adam", loss=memm.sparse_loss, metrics=[memm.sparse_accuracy])

    Reference:
        https://kexue.fm/archives/7213 (CRF vs MEMM, and the bidirectional MEMM)
    """

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(lr_multiplier=lr_multiplier, **kwargs)
        if hidden_dim is not None and (not isinstance(hidden_dim, int) or hidden_dim <= 0):
            raise ValueError(
                f"MaximumEntropyMarkovModel: hidden_dim must be a positive int or None, "
                f"got {hidden_dim!r}"
            )
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        super().build(input_shape)
        n = self._label_count
        if self.hidden_dim is None:
            self._trans = self._add_scaled_weight("trans", (n, n))
        else:
            self._l_trans = self._add_scaled_weight("l_trans", (n, self.hidden_dim))
            self._r_trans = self._add_scaled_weight("r_trans", (n, self.hidden_dim))

    @property
    def trans(self):
        """The full transition matrix (computed from the factors if hidden_dim is set)."""
        if self.hidden_dim is None:
            return self._scaled(self._trans)
        # (labels, hidden) x (labels, hidden)^T -> (labels, labels)
        return ops.matmul(self.l_trans, ops.transpose(self.r_trans))

    @property
    def l_trans(self):
        return self._scaled(self._l_trans)

    @property
    def r_trans(self):
        return self._scaled(self._r_trans)

    def _history(self, labels, go_backwards):
        """Transition scores from each token's neighbour label, (batch, seq-1, labels).

        Left to right the neighbour is the previous label j: row trans[j].
        Right to left it is the next label j: column trans[:, j].
        """
        neighbour = labels[:, 1:] if go_backwards else labels[:, :-1]
        if self.hidden_dim is None:
            trans = ops.transpose(self.trans) if go_backwards else self.trans
            return ops.take(trans, neighbour, axis=0)
        left, right = (self.r_trans, self.l_trans) if go_backwards else (self.l_trans, self.r_trans)
        # (batch, seq-1, hidden) x (labels, hidden) -> (batch, seq-1, labels)
        return ops.einsum("bnd,kd->bnk", ops.take(left, neighbour, axis=0), right)

    def _local_logits(self, labels, y_pred, mask, go_backwards):
        """(emission + neighbour transition) / 2; the emission alone where the
        neighbour is padding or off the sequence."""
        history = ops.cast(self._history(labels, go_backwards), y_pred.dtype)
        # Line each neighbour's transition row up with the token it conditions:
        # (batch, seq-1, labels) -> (batch, seq, labels)
        edge, no_edge = ops.zeros_like(y_pred[:, :1]), ops.zeros_like(mask[:, :1])
        if go_backwards:
            history = ops.concatenate([history, edge], axis=1)
            neighbour_real = ops.concatenate([mask[:, 1:], no_edge], axis=1)
        else:
            history = ops.concatenate([edge, history], axis=1)
            neighbour_real = ops.concatenate([no_edge, mask[:, :-1]], axis=1)
        history = ops.where(neighbour_real[..., None], history, y_pred)
        return (y_pred + history) / 2

    def _prepare(self, y_true, y_pred):
        _check_emissions(self, y_pred, self._num_labels())
        labels = _sparse_labels(self, y_true, y_pred)
        y_pred = _float32(y_pred)
        labels, y_pred, mask = _real_first(_padding_mask(y_pred), labels, y_pred)
        return labels, ops.where(mask[..., None], y_pred, 0.0), mask

    def basic_loss(self, y_true, y_pred, go_backwards=False):
        """Mean token cross-entropy of one direction (integer y_true), a scalar."""
        labels, y_pred, mask = self._prepare(y_true, y_pred)
        logits = self._local_logits(labels, y_pred, mask, go_backwards)
        loss = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return _masked_mean(loss, mask)

    def sparse_loss(self, y_true, y_pred):
        """Both directions' losses averaged; y_true integer labels."""
        forward = self.basic_loss(y_true, y_pred, False)
        return (forward + self.basic_loss(y_true, y_pred, True)) / 2

    def dense_loss(self, y_true, y_pred):
        """As `sparse_loss`, with one-hot y_true."""
        return self.sparse_loss(_dense_labels(self, y_true, self._num_labels()), y_pred)

    def basic_accuracy(self, y_true, y_pred, go_backwards=False):
        """Per-token accuracy of one direction given the gold neighbours (integer y_true).

        bert4keras' MEMM training metric. It reads the transition weights, which
        Keras' JAX trainer keeps out of reach of metrics during fit, so use it
        to evaluate outside fit; `sparse_accuracy` is the in-fit metric.
        """
        labels, y_pred, mask = self._prepare(y_true, y_pred)
        logits = self._local_logits(labels, y_pred, mask, go_backwards)
        hits = ops.equal(labels, ops.cast(ops.argmax(logits, -1), "int32"))
        return _masked_mean(ops.cast(hits, "float32"), mask)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the emission argmax on real positions; y_true integer labels.

        Needs no weights, so it works as a `compile(metrics=...)` metric on every
        backend (bert4keras averaged `basic_accuracy` over both directions).
        """
        _check_emissions(self, y_pred, self._num_labels())
        return _emission_accuracy(_sparse_labels(self, y_true, y_pred), y_pred)

    def dense_accuracy(self, y_true, y_pred):
        """As `sparse_accuracy`, with one-hot y_true."""
        return self.sparse_accuracy(_dense_labels(self, y_true, self._num_labels()), y_pred)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}
