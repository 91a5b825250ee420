"""The tokenizer test corpus and vocabs (tests/data), shared by the tokenizer tests."""

import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
CASED_VOCAB = DATA / "cased_vocab.txt"


def _read_corpus():
    sys.path.insert(0, str(DATA))
    try:
        from make_tokenizer_corpus import read_corpus
    finally:
        sys.path.remove(str(DATA))
    return read_corpus(DATA / "tokenizer_corpus.txt")


CORPUS = _read_corpus()
