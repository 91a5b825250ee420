"""Scores for the task examples: entity P/R/F1, word segmentation P/R/F1, exact match, char F1.

Small pure-Python functions (no Keras) that take what a decoder produces:
tag sequences or spans for named entities, b/m/e/s tags or word lists for
segmentation, strings for generation. Counts are micro-averaged over the whole
corpus (every entity or word counts once), as in bert4keras' examples and the
CoNLL scorer.

Spans are `(start, end, type)` with `end` inclusive, bert4keras' convention
(`text[start:end + 1]` is the entity).

Example:
    >>> gold = [["B-PER", "E-PER", "O", "S-LOC"]]
    >>> pred = [["B-PER", "E-PER", "O", "O"]]
    >>> entity_prf(gold, pred)
    PRF(precision=1.0, recall=0.5, f1=0.6666666666666666, correct=1, predicted=1, gold=2)
"""

from collections import Counter, namedtuple

__all__ = [
    "PRF",
    "char_f1",
    "entity_prf",
    "exact_match",
    "prf",
    "segmentation_prf",
    "tags_to_spans",
    "tags_to_words",
    "words_to_spans",
]

PRF = namedtuple("PRF", ["precision", "recall", "f1", "correct", "predicted", "gold"])
PRF.__doc__ = """Micro precision, recall and F1 with the counts they come from.

`precision` is 0.0 when nothing was predicted, `recall` is 0.0 when there was
nothing to find, and `f1` is 0.0 when both counts are 0 (the bert4keras and
seqeval convention). `._asdict()` gives a JSON-ready dict.
"""

_SCHEMES = ("auto", "bio", "bioes")
_SEGMENT_INPUTS = ("words", "tags")


def prf(correct, predicted, gold):
    """Builds a `PRF` from the three counts.

    Args:
        correct: items both predicted and in the gold standard.
        predicted: items predicted.
        gold: items in the gold standard.

    Returns:
        A `PRF`.

    Example:
        >>> prf(3, 4, 6).f1
        0.6
    """
    for name, value in (("correct", correct), ("predicted", predicted), ("gold", gold)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"prf: {name} must be an int >= 0, got {value!r}")
    if correct > min(predicted, gold):
        raise ValueError(
            f"prf: correct ({correct}) cannot exceed predicted ({predicted}) or gold ({gold})"
        )
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * correct / (predicted + gold) if predicted + gold else 0.0
    return PRF(precision, recall, f1, correct, predicted, gold)


def _split_tag(tag, position):
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', None); a bare 'B' -> ('B', None)."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag at position {position} must be a non-empty str, got {tag!r}")
    if tag == "O":
        return "O", None
    prefix, sep, kind = tag.partition("-")
    if prefix not in ("B", "I", "M", "E", "S") or (sep and not kind):
        raise ValueError(
            f"tag {tag!r} at position {position} is not 'O' or PREFIX-TYPE with PREFIX one of "
            "B, I, M, E, S"
        )
    return prefix, kind or None


def tags_to_spans(tags, scheme="auto"):
    """Entity spans of one tagged sequence.

    Schemes:
        "bio": an entity starts at B-X and goes on over the I-X that follow. An
            I-X that does not continue an X entity starts one (the CoNLL rule).
        "bioes" (also BMES, as MSRA ships; I and M mean the same): S-X is a
            one-token entity; B-X, then I-X/M-X, then E-X is a longer one.
            Fragments (B-X never closed by E-X, an E-X or I-X without its B-X,
            a type change inside) are dropped: strict matching.
        "auto": "bioes" if any tag starts with E, S or M, else "bio".

    Args:
        tags: sequence of tag strings such as "B-PER", "M-LOC", "O".
        scheme: "auto", "bio" or "bioes".

    Returns:
        list of `(start, end, type)`, end inclusive, in order.

    Example:
        >>> tags_to_spans(["B-ORG", "M-ORG", "E-ORG", "O", "S-PER"])
        [(0, 2, 'ORG'), (4, 4, 'PER')]
        >>> tags_to_spans(["B-LOC", "I-LOC", "O", "I-PER"])
        [(0, 1, 'LOC'), (3, 3, 'PER')]
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"tags_to_spans: scheme must be one of {_SCHEMES}, got {scheme!r}")
    parts = [_split_tag(tag, i) for i, tag in enumerate(tags)]
    if scheme == "auto":
        scheme = "bioes" if any(p in ("E", "S", "M") for p, _ in parts) else "bio"
    return _bio_spans(parts) if scheme == "bio" else _bioes_spans(parts)


def _bio_spans(parts):
    spans, start, kind = [], None, None
    for i, (prefix, tag_kind) in enumerate(parts):
        continues = prefix == "I" and start is not None and tag_kind == kind
        if continues:
            continue
        if start is not None:
            spans.append((start, i - 1, kind))
            start = kind = None
        if prefix in ("B", "I"):
            start, kind = i, tag_kind
        elif prefix != "O":
            raise ValueError(f"tag prefix {prefix!r} at position {i} is not part of BIO")
    if start is not None:
        spans.append((start, len(parts) - 1, kind))
    return spans


def _bioes_spans(parts):
    spans, start, kind = [], None, None
    for i, (prefix, tag_kind) in enumerate(parts):
        if prefix == "S":
            spans.append((i, i, tag_kind))
            start = None
        elif prefix == "B":
            start, kind = i, tag_kind  # an unclosed earlier B is dropped
        elif prefix in ("I", "M"):
            if start is not None and tag_kind != kind:
                start = None
        elif prefix == "E":
            if start is not None and tag_kind == kind:
                spans.append((start, i, kind))
            start = None
        else:  # "O"
            start = None
    return spans


def _as_span_set(item, scheme, position):
    """A sentence's entities as a set: from its tags, or from spans given directly."""
    items = list(item)
    if all(isinstance(x, str) for x in items):
        return set(tags_to_spans(items, scheme))
    spans = set()
    for span in items:
        if not isinstance(span, (tuple, list)) or len(span) != 3:
            raise ValueError(
                f"entity_prf: sentence {position} mixes tags and spans or holds {span!r}; "
                "give a list of tag strings or of (start, end, type) spans"
            )
        spans.add(tuple(span))
    return spans


def _check_pairs(gold, pred, caller):
    gold, pred = list(gold), list(pred)
    if len(gold) != len(pred):
        raise ValueError(
            f"{caller}: gold has {len(gold)} sentences but pred has {len(pred)}; give one "
            "prediction per gold sentence"
        )
    return gold, pred


def entity_prf(gold, pred, scheme="auto"):
    """Entity-level micro precision / recall / F1 over a corpus.

    An entity counts as correct only if its start, end and type all match.

    Args:
        gold: one item per sentence: its tag sequence, or an iterable of
            `(start, end, type)` spans.
        pred: the predictions, in the same form (forms may differ between gold
            and pred, not inside one sentence).
        scheme: tag scheme for tag sequences, see `tags_to_spans`.

    Returns:
        A `PRF`.

    Example:
        >>> entity_prf([[(0, 1, "PER"), (5, 6, "LOC")]], [[(0, 1, "PER"), (5, 6, "ORG")]]).f1
        0.5
    """
    gold, pred = _check_pairs(gold, pred, "entity_prf")
    correct = predicted = total = 0
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        g, p = _as_span_set(g, scheme, i), _as_span_set(p, scheme, i)
        correct += len(g & p)
        predicted += len(p)
        total += len(g)
    return prf(correct, predicted, total)


def tags_to_words(chars, tags):
    """Cuts a text into words by its b/m/e/s tags (begin, middle, end, single).

    Lenient, so every character lands in a word: a word starts at b or s, at
    the first character, and after an e or an s; anything else continues the
    current word (an "m" or "e" after "s" starts a new one).

    Args:
        chars: the text (a str or a sequence of characters).
        tags: one tag per character, in "bmes" (either case).

    Returns:
        list of words (str).

    Example:
        >>> tags_to_words("我爱北京", "ssbe")
        ['我', '爱', '北京']
    """
    chars, tags = list(chars), [str(t).lower() for t in tags]
    if len(chars) != len(tags):
        raise ValueError(
            f"tags_to_words: {len(chars)} characters but {len(tags)} tags; give one tag per "
            "character"
        )
    words = []
    for i, (char, tag) in enumerate(zip(chars, tags, strict=True)):
        if tag not in ("b", "m", "e", "s"):
            raise ValueError(f"tags_to_words: tag {tag!r} at position {i} is not b, m, e or s")
        if i == 0 or tag in ("b", "s") or tags[i - 1] in ("e", "s"):
            words.append(char)
        else:
            words[-1] += char
    return words


def words_to_spans(words):
    """Character spans `(start, end)` (end inclusive) of consecutive words.

    Example:
        >>> words_to_spans(["我", "爱", "北京"])
        [(0, 0), (1, 1), (2, 3)]
    """
    spans, start = [], 0
    for i, word in enumerate(words):
        if not isinstance(word, str) or not word:
            raise ValueError(f"words_to_spans: word {i} must be a non-empty str, got {word!r}")
        spans.append((start, start + len(word) - 1))
        start += len(word)
    return spans


def segmentation_prf(gold, pred, inputs="words"):
    """Word-level micro precision / recall / F1 of a segmentation.

    A predicted word is correct when a gold word covers exactly the same
    characters (the SIGHAN bakeoff score).

    Args:
        gold: one item per sentence: a list of words, or (inputs="tags") a
            b/m/e/s tag sequence.
        pred: the predictions, in the same form.
        inputs: "words" or "tags".

    Returns:
        A `PRF`.

    Raises:
        ValueError: if a gold and a predicted sentence cover different texts
            (words) or lengths (tags).

    Example:
        >>> segmentation_prf([["我", "爱", "北京"]], [["我爱", "北京"]])
        PRF(precision=0.5, recall=0.3333333333333333, f1=0.4, correct=1, predicted=2, gold=3)
    """
    if inputs not in _SEGMENT_INPUTS:
        raise ValueError(
            f"segmentation_prf: inputs must be one of {_SEGMENT_INPUTS}, got {inputs!r}"
        )
    gold, pred = _check_pairs(gold, pred, "segmentation_prf")
    correct = predicted = total = 0
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if inputs == "tags":
            if len(g) != len(p):
                raise ValueError(
                    f"segmentation_prf: sentence {i} has {len(g)} gold tags but {len(p)} "
                    "predicted tags"
                )
            text = "x" * len(g)  # only the boundaries matter
            g, p = tags_to_words(text, g), tags_to_words(text, p)
        elif "".join(g) != "".join(p):
            raise ValueError(
                f"segmentation_prf: sentence {i}: the predicted words do not spell the gold "
                f"text ({''.join(p)[:30]!r} vs {''.join(g)[:30]!r})"
            )
        g, p = set(words_to_spans(g)), set(words_to_spans(p))
        correct += len(g & p)
        predicted += len(p)
        total += len(g)
    return prf(correct, predicted, total)


def exact_match(gold, pred):
    """Share of predictions equal to their reference (after stripping outer spaces).

    Args:
        gold: reference strings.
        pred: predicted strings, one per reference.

    Returns:
        A float in [0, 1].

    Example:
        >>> exact_match(["北京", "上海 "], ["北京", "上"])
        0.5
    """
    gold, pred = _check_pairs(gold, pred, "exact_match")
    if not gold:
        raise ValueError("exact_match: got no sentences")
    hits = sum(str(g).strip() == str(p).strip() for g, p in zip(gold, pred, strict=True))
    return hits / len(gold)


def char_f1(gold, pred):
    """Mean bag-of-characters F1 between each prediction and its reference.

    Per pair, characters are counted with multiplicity (whitespace ignored) and
    the overlap is the multiset intersection; F1 = 2 * overlap / (len(pred) +
    len(gold)). Two empty strings score 1, one empty string 0. This is the
    SQuAD token F1 with characters as tokens, the usual choice for Chinese.

    Args:
        gold: reference strings.
        pred: predicted strings, one per reference.

    Returns:
        A float in [0, 1].

    Example:
        >>> char_f1(["北京大学"], ["北京"])
        0.6666666666666666
    """
    gold, pred = _check_pairs(gold, pred, "char_f1")
    if not gold:
        raise ValueError("char_f1: got no sentences")
    total = 0.0
    for g, p in zip(gold, pred, strict=True):
        g = Counter(c for c in str(g) if not c.isspace())
        p = Counter(c for c in str(p) if not c.isspace())
        size = sum(g.values()) + sum(p.values())
        total += 2 * sum((g & p).values()) / size if size else 1.0
    return total / len(gold)
