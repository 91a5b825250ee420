"""Tokenizers trained in the tests (no network) with the `tokenizers` package.

Three models the way real checkpoints build them: a byte-level BPE with ChatML
special tokens (GPT-2 / Qwen / LLaMA-3 style), a Unigram with a Metaspace
pre-tokenizer (T5 / ALBERT style) and a WordPiece with BERT's normaliser and
``[CLS] $A [SEP] $B:1 [SEP]:1`` template. They learn from the shared corpus
(tests/data/tokenizer_corpus.txt) plus the samples below, which add what a
chat model sees: emoji sequences, combining marks, full-width forms, control
characters and text that contains special tokens.
"""

import json

from tests.tokenizers.corpus import CORPUS

EXTRA = [
    "Hello, world! 你好，世界！",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧 🇨🇳🇺🇸 ❤️",
    "combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0358 ḱ",
    "full-width: ＡＢＣ，１２３！？（全角）",
    "controls: a\x00b\x07c\x1bd\te\r\nf\u200bg\u200dh",
    "tabs\tand\nnewlines\n\n  double  spaces   end ",
    "code: def f(x):\n    return x ** 2  # 注释",
    "<|im_start|>user\n你好<|im_end|>",
    "mixed 中文 English 日本語 한국어 العربية Ελληνικά",
    "numbers 3.14159 1,000,000 2024-01-01 ①②③",
]
TEXTS = CORPUS + EXTRA

# Samples the tests encode: hard cases, special tokens written inside text,
# and text the models never saw in training.
SAMPLES = [
    *EXTRA,
    *CORPUS[::37],
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    "before<|endoftext|>after <|im_end|> spaced",
    "unseen: ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 🫠",
    " leading space",
    "",
]

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]  # fmt: skip
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_byte_level_bpe(vocab_size=1500, specials=None):
    """A byte-level BPE like GPT-2 / Qwen2 / LLaMA-3 (every byte in the alphabet)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials or CHATML_SPECIALS + LLAMA3_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    return tokenizer


def train_unigram(vocab_size=3000):
    """A Unigram model with a Metaspace pre-tokenizer, adding ``</s>`` like T5."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)]
    )
    return tokenizer


def train_wordpiece(vocab_size=1500):
    """A cased WordPiece with BERT's normaliser, pre-tokenizer and pair template."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=BERT_SPECIALS, show_progress=False
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tokenizer


def save(tokenizer, folder, config=None):
    """Writes ``tokenizer.json`` (and ``tokenizer_config.json``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    if config is not None:
        with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
    return folder
