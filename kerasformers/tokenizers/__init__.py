"""Tokenizers (bert4keras' `tokenizers` module): WordPiece, SentencePiece, tokenizer.json.

- `Tokenizer` (`wordpiece`): BERT's WordPiece in pure Python, id-exact with
  Hugging Face's `BertTokenizer`;
- `SpTokenizer` (`sentencepiece`): a SentencePiece model behind the same API;
- `HFTokenizer` (`hf`): a Hugging Face tokenizer.json (byte-level BPE, Unigram,
  WordPiece) behind the same API, with chat templates (`chat`);
- `TokenizerBase`, `load_vocab`, `save_vocab`, `truncate_sequences` (`base`);
- `unicode`: the character tables matched to HF's Rust tokenizers.

Nothing here imports Keras or the rest of kerasformers.

Example:
    >>> from kerasformers.tokenizers import Tokenizer
    >>> tokenizer = Tokenizer({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hi": 3})
    >>> tokenizer.encode("hi")
    ([1, 3, 2], [0, 0, 0])
"""

from kerasformers.tokenizers.base import TokenizerBase, load_vocab, save_vocab, truncate_sequences
from kerasformers.tokenizers.hf import HFTokenizer
from kerasformers.tokenizers.sentencepiece import SpTokenizer
from kerasformers.tokenizers.wordpiece import Tokenizer

__all__ = [
    "HFTokenizer",
    "SpTokenizer",
    "Tokenizer",
    "TokenizerBase",
    "load_vocab",
    "save_vocab",
    "truncate_sequences",
]
