"""Sample builders: an instance `(ids, word_starts)` -> model inputs, labels and
loss weights, with a per-instance random generator (so masking is dynamic per
epoch yet reproducible, whatever the number of workers or ranks).

- `MLMSampleBuilder`: RoBERTa-style masked LM with whole-word masking.
- `LMSampleBuilder`: GPT-style causal LM (model built with `application="lm"`).
- `UniLMSampleBuilder`: UniLM seq2seq LM, source/target split at a random point
  (model built with `application="unilm"`).

Every builder returns int32 `token_ids`, `segment_ids`, `labels` and float32
`weights` of the same length; `collate` pads a list of them to a fixed length.
Labels are aligned with the model output: `labels[t]` is what position `t`
must predict (the original token for MLM, the next token for LM/UniLM).
"""

import numpy as np

from kerasformers.snippets import sequence_padding


def _regular_ids(token_dict):
    """Ids a random replacement may use: everything but [PAD]/[UNK]/[CLS]/
    [SEP]/[MASK] and the `[unusedN]` padding of the vocab."""
    ids = [
        i for token, i in token_dict.items() if not (token.startswith("[") and token.endswith("]"))
    ]
    if not ids:
        raise ValueError("the vocab has no regular tokens to draw random replacements from")
    return np.asarray(sorted(ids), dtype="int32")


def _special_id(token_dict, token):
    if token not in token_dict:
        raise ValueError(f"the vocab has no {token} token (needed for pretraining samples)")
    return token_dict[token]


def whole_word_mask(
    ids,
    word_starts,
    rng,
    mask_id,
    random_ids,
    mask_rate=0.15,
    mask_token_rate=0.8,
    random_token_rate=0.1,
):
    """Masks whole words: each word is chosen with probability `mask_rate` and
    all its tokens are then predicted; each chosen token is replaced by
    [MASK] (`mask_token_rate`), by a random regular token (`random_token_rate`)
    or kept (the rest).

    Choosing words, not a fixed token count, keeps the expected fraction of
    predicted tokens at exactly `mask_rate` whatever the word lengths (Google's
    wwm script fills a budget instead, which skips long words more often).

    Args:
        ids: int array of token ids (no [CLS]/[SEP]).
        word_starts: "0"/"1" string or bool array, 1 at each word's first token.
        rng: a `numpy.random.Generator`.
        mask_id: id of [MASK].
        random_ids: int array of ids a random replacement draws from.
        mask_rate, mask_token_rate, random_token_rate: the 15% / 80% / 10%.

    Returns:
        `(inputs, selected)`: the corrupted ids and a bool array of the
        positions to predict.

    Reference:
        https://arxiv.org/abs/1810.04805 (80/10/10),
        https://arxiv.org/abs/1906.08101 (whole-word masking for Chinese)
    """
    ids = np.asarray(ids, dtype="int32")
    if isinstance(word_starts, str):
        starts = np.frombuffer(word_starts.encode("ascii"), dtype="uint8") == ord("1")
    else:
        starts = np.asarray(word_starts, dtype=bool)
    if starts.shape != ids.shape:
        raise ValueError(f"word_starts has {starts.shape[0]} entries for {ids.shape[0]} ids")
    if ids.size == 0:
        return ids.copy(), np.zeros(0, dtype=bool)
    starts = starts.copy()
    starts[0] = True
    word_of_token = np.cumsum(starts) - 1  # (tokens,) index of each token's word
    chosen_words = rng.random(word_of_token[-1] + 1) < mask_rate
    selected = chosen_words[word_of_token]
    r = rng.random(ids.shape[0])
    inputs = ids.copy()
    inputs[selected & (r < mask_token_rate)] = mask_id
    randomised = selected & (r >= mask_token_rate) & (r < mask_token_rate + random_token_rate)
    inputs[randomised] = random_ids[rng.integers(len(random_ids), size=int(randomised.sum()))]
    return inputs, selected


class _Builder:
    def __init__(self, token_dict, maxlen):
        if maxlen < 4:
            raise ValueError(f"maxlen must be >= 4, got {maxlen}")
        self.token_dict = token_dict
        self.maxlen = int(maxlen)
        self.cls_id = _special_id(token_dict, "[CLS]")
        self.sep_id = _special_id(token_dict, "[SEP]")
        self.pad_id = _special_id(token_dict, "[PAD]")

    def empty(self):
        """A row that contributes nothing (all padding, weight 0)."""
        zeros = np.zeros(1, dtype="int32") + self.pad_id
        return zeros, np.zeros(1, "int32"), zeros.copy(), np.zeros(1, "float32")


class MLMSampleBuilder(_Builder):
    """RoBERTa-style masked-LM samples: `[CLS] ids [SEP]`, whole-word masked.

    Loss weights are `1 / mask_rate` on the predicted positions, so the mean of
    the weighted per-token loss over all positions of a fixed-length batch is
    about the mean loss per predicted token, with a normaliser that does not
    depend on the batch's content: the loss of a global batch is then exactly
    the mean of its shards' losses, which makes data-parallel training equal
    single-device training.

    Args:
        token_dict: the vocab (`{token: id}`) with [PAD], [CLS], [SEP], [MASK].
        maxlen: sequence length with [CLS]/[SEP]; longer instances are cut.
        mask_rate, mask_token_rate, random_token_rate: as `whole_word_mask`.
        whole_word: False masks tokens independently.

    Example:
        >>> builder = MLMSampleBuilder(token_dict, maxlen=128)
        >>> token_ids, segment_ids, labels, weights = builder(ids, starts, rng)
    """

    def __init__(
        self,
        token_dict,
        maxlen,
        mask_rate=0.15,
        mask_token_rate=0.8,
        random_token_rate=0.1,
        whole_word=True,
    ):
        super().__init__(token_dict, maxlen)
        for name, value in [
            ("mask_rate", mask_rate),
            ("mask_token_rate", mask_token_rate),
            ("random_token_rate", random_token_rate),
        ]:
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if mask_rate == 0 or mask_token_rate + random_token_rate > 1:
            raise ValueError(
                f"need mask_rate > 0 and mask_token_rate + random_token_rate <= 1, got "
                f"{mask_rate}, {mask_token_rate}, {random_token_rate}"
            )
        self.mask_rate = mask_rate
        self.mask_token_rate = mask_token_rate
        self.random_token_rate = random_token_rate
        self.whole_word = whole_word
        self.mask_id = _special_id(token_dict, "[MASK]")
        self.random_ids = _regular_ids(token_dict)

    def __call__(self, ids, word_starts, rng):
        ids = np.asarray(ids[: self.maxlen - 2], dtype="int32")
        starts = word_starts[: self.maxlen - 2] if self.whole_word else "1" * len(ids)
        inputs, selected = whole_word_mask(
            ids,
            starts,
            rng,
            self.mask_id,
            self.random_ids,
            self.mask_rate,
            self.mask_token_rate,
            self.random_token_rate,
        )
        token_ids = np.concatenate([[self.cls_id], inputs, [self.sep_id]]).astype("int32")
        labels = np.concatenate([[self.cls_id], ids, [self.sep_id]]).astype("int32")
        weights = np.concatenate([[0.0], selected / self.mask_rate, [0.0]]).astype("float32")
        return token_ids, np.zeros_like(token_ids), labels, weights


class LMSampleBuilder(_Builder):
    """GPT-style causal LM samples: `[CLS] ids [SEP]`, each position predicts
    the next token (the last one predicts nothing).

    Args:
        token_dict: the vocab with [PAD], [CLS], [SEP].
        maxlen: sequence length with [CLS]/[SEP].
    """

    def __call__(self, ids, word_starts, rng):
        ids = np.asarray(ids[: self.maxlen - 2], dtype="int32")
        token_ids = np.concatenate([[self.cls_id], ids, [self.sep_id]]).astype("int32")
        labels = np.concatenate([token_ids[1:], [self.pad_id]]).astype("int32")
        weights = np.concatenate([np.ones(len(token_ids) - 1), [0.0]]).astype("float32")
        return token_ids, np.zeros_like(token_ids), labels, weights


class UniLMSampleBuilder(_Builder):
    """UniLM seq2seq samples: the instance is split at a random point into a
    source and a target, `[CLS] source [SEP] target [SEP]` with segment ids
    0 / 1; positions predict the next token where that token is in the target
    (bert4keras' `y_mask = segment_ids[:, 1:]`).

    Args:
        token_dict: the vocab with [PAD], [CLS], [SEP].
        maxlen: sequence length with [CLS] and both [SEP].

    Reference:
        https://arxiv.org/abs/1905.03197, https://kexue.fm/archives/6933
    """

    def __call__(self, ids, word_starts, rng):
        ids = np.asarray(ids[: self.maxlen - 3], dtype="int32")
        if len(ids) < 2:
            return self.empty()
        split = int(rng.integers(1, len(ids)))  # source and target both non-empty
        source, target = ids[:split], ids[split:]
        token_ids = np.concatenate(
            [[self.cls_id], source, [self.sep_id], target, [self.sep_id]]
        ).astype("int32")
        segment_ids = np.concatenate([np.zeros(len(source) + 2), np.ones(len(target) + 1)]).astype(
            "int32"
        )
        labels = np.concatenate([token_ids[1:], [self.pad_id]]).astype("int32")
        weights = np.concatenate([segment_ids[1:], [0]]).astype("float32")
        return token_ids, segment_ids, labels, weights


BUILDERS = {"mlm": MLMSampleBuilder, "lm": LMSampleBuilder, "unilm": UniLMSampleBuilder}


def collate(samples, length, pad_id=0):
    """Pads builder outputs to `length` and stacks them.

    Returns:
        `([token_ids, segment_ids], labels, weights)`, numpy arrays of shape
        `(len(samples), length)` (int32, int32, int32, float32): the `x`, `y`
        and `sample_weight` of `model.train_on_batch`.
    """
    columns = list(zip(*samples, strict=True))
    token_ids = sequence_padding(columns[0], length=length, value=pad_id).astype("int32")
    segment_ids = sequence_padding(columns[1], length=length).astype("int32")
    labels = sequence_padding(columns[2], length=length).astype("int32")
    weights = sequence_padding(columns[3], length=length).astype("float32")
    return [token_ids, segment_ids], labels, weights
