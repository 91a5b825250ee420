"""Supervised fine-tuning (SFT) of a small Qwen2-shaped chat model from scratch, then a
streaming chat in the terminal.

The pipeline of an LLM chat model in miniature, on one offline Chinese corpus:

1. a byte-level BPE tokenizer (the `tokenizers` package) trained on the training
   dialogues, saved as `tokenizer.json` + `tokenizer_config.json` with a ChatML
   chat template (Qwen2's format, default system prompt "你是一个乐于助人的助手。")
   and loaded back with `kerasformers.tokenizers.HFTokenizer`;
2. a Qwen2 decoder from random init (`build_transformer_model(config,
   model="qwen2")`: RMS norm, rotary positions, grouped-query attention, SwiGLU,
   tied embeddings), default 4 layers, hidden 256, 4 query / 2 key-value heads;
3. every dialogue rendered with `apply_chat_template` and trained with `fit` on a
   sparse cross-entropy weighted by a loss mask that is 1 exactly on the
   assistant's tokens and the `<|im_end|>` closing each assistant turn (system,
   user and template tokens are context, never targets), so the model learns to
   answer and to stop;
4. the model saved in Hugging Face's layout (`config.json` + `model.safetensors`
   beside the tokenizer files: transformers' `Qwen2ForCausalLM` loads the
   folder), and `--chat`: a terminal chat that keeps the history, renders it
   with the template, streams the reply with `stream_generate` (stopping at
   `<|im_end|>` or `<|endoftext|>`) and prints characters as they complete.

Corpus: `chatterbot-corpus` 1.3.3 (BSD-3-Clause; the `make` set-up installs it with
--no-deps), its `chinese/` and `traditionalchinese/` YAML files: 467 + 456
conversations on 17 topics (AI, greetings, emotion, humour, science, ...), mostly
one exchange, a few multi-turn. It is small and partly machine-translated, but it
is the only Chinese dialogue corpus on PyPI that ships its data: the larger ones
there (`efaqa-corpus-zh`, `insuranceqa-data`) download it at run time, and
LCCC, Douban, Weibo, Xiaohuangji or Qingyun are on no package registry. The two
scripts of a conversation are kept on the same side of the held-out split.
Research-use data: use it for examples and measurements, do not redistribute it.

A model this small trained from scratch on ~900 exchanges learns the format (it
answers, in Chinese, and stops) and memorises training replies; on new prompts it
babbles. See the README of the repository for the figures of a full run.

Run:
    KERAS_BACKEND=jax python examples/task_sft_chat.py              # train, save
    KERAS_BACKEND=jax python examples/task_sft_chat.py --chat       # talk to it
    KERAS_BACKEND=jax python examples/task_sft_chat.py --smoke      # a few seconds (CI)
"""

import os
import sys
import tempfile
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _task_common as common  # noqa: E402
import sft_chat_data as data  # noqa: E402

from kerasformers.generation import generate, stream_generate  # noqa: E402
from kerasformers.models import build_transformer_model  # noqa: E402
from kerasformers.optimizers import AdamWLR  # noqa: E402
from kerasformers.tokenizers import HFTokenizer  # noqa: E402

# Decoder sizes trained from random init (HF Qwen2 config keys). "smoke" is for CI only.
SIZES = {
    "smoke": dict(
        num_hidden_layers=1,
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=128,
    ),
    "small": dict(
        num_hidden_layers=4,
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=704,
    ),
}
MAX_POSITION = 512
SCRIPTED_CHAT = ("你好", "你喜欢什么颜色?")  # what --smoke types into the chat


# ----------------------------------------------------------------------------- model
def model_config(size, vocab_size):
    """An HF Qwen2 config dict of one of the SIZES."""
    return dict(
        SIZES[size],
        model_type="qwen2",
        vocab_size=vocab_size,
        max_position_embeddings=MAX_POSITION,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        hidden_act="silu",
    )


def build_model(config, checkpoint=None):
    """The Qwen2 builder (its .model outputs logits: the loss and generate take them)."""
    return build_transformer_model(
        config,
        checkpoint,
        model="qwen2",
        final_activation="linear",
        return_keras_model=False,
    )


def compile_model(model, args, steps):
    # Training from scratch: linear warm-up over the first 5% of steps, decay to 10%.
    warmup = max(1, steps // 20)
    optimizer = AdamWLR(
        learning_rate=args.lr,
        lr_schedule={warmup: 1.0, max(warmup + 1, steps): 0.1},
        weight_decay_rate=args.weight_decay,
        exclude_from_weight_decay=["Norm", "bias"],
    )
    # Mean over the weighted (assistant) tokens of each batch, not over all positions.
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    model.compile(optimizer=optimizer, loss=loss)


def masked_loss(model, generator):
    """Mean cross-entropy per assistant target token over all of `generator`'s batches
    (exact: summed over tokens, not averaged over batches)."""
    total, count = 0.0, 0.0
    for inputs, next_ids, weights in generator:
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
        logits = logits.astype("float64")
        logits -= logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(-1))
        picked = np.take_along_axis(logits, next_ids[..., None], -1)[..., 0]
        total += float(((log_z - picked) * weights).sum())
        count += float(weights.sum())
    return total / max(count, 1.0)


class LossLog(keras.callbacks.Callback):
    """The loss of every training batch (Keras' logs hold the epoch's running mean)."""

    def __init__(self):
        super().__init__()
        self.running, self.times = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)

    def on_train_batch_end(self, batch, logs=None):
        self.running.append(float(logs["loss"]))


# ----------------------------------------------------------------------------- chat
class ChatSession:
    """A conversation with the model: history in, a streamed reply out.

    Args:
        model: the Qwen2 keras.Model (logits or probabilities).
        tokenizer: the `HFTokenizer` with the chat template.
        max_context: the prompt keeps at most this many tokens; the oldest
            exchanges are dropped first (the system turn stays).
        **generate_kwargs: `stream_generate` / `generate` arguments
            (max_new_tokens, method, top_p, temperature, seed, ...).
    """

    def __init__(self, model, tokenizer, max_context=256, **generate_kwargs):
        self.model, self.tokenizer = model, tokenizer
        self.max_context = max_context
        self.end_ids = [tokenizer.token_to_id(data.IM_END), tokenizer.token_to_id(data.ENDOFTEXT)]
        self.kwargs = dict(generate_kwargs, end_id=self.end_ids)
        self.history = []

    def prompt_ids(self, text):
        messages = self.history + [{"role": "user", "content": text}]
        while True:
            ids = self.tokenizer.apply_chat_template(messages, tokenize=True)
            if len(ids) <= self.max_context or len(messages) == 1:
                return ids[-self.max_context :]
            messages = messages[2:]

    def reply(self, text, write=None):
        """Answers `text`; `write(piece)` gets the reply as it is generated.

        Returns:
            (reply text, generated ids, prompt ids).
        """
        ids = self.prompt_ids(text)
        streamer, new = data.TextStreamer(self.tokenizer), []
        for step in stream_generate(self.model, [ids], **self.kwargs):
            new += step[0]
            piece = streamer.put(step[0])
            if piece and write:
                write(piece)
        rest = streamer.flush()
        if rest and write:
            write(rest)
        answer = self.tokenizer.decode(new)
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
        return answer, new, ids


def load_chat_model(folder):
    """The tokenizer and the model saved by a training run in `folder`."""
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        raise SystemExit(
            f"no trained model in {folder}: run examples/task_sft_chat.py first "
            "(or pass --model-dir)"
        )
    tokenizer = HFTokenizer(folder)
    model = build_transformer_model(
        os.path.join(folder, "config.json"), folder, model="auto", final_activation="linear"
    )
    return tokenizer, model


def generation_kwargs(args):
    return dict(
        max_new_tokens=args.max_new_tokens,
        method="sample" if args.temperature > 0 else "greedy",
        top_p=args.top_p if args.temperature > 0 else None,
        temperature=args.temperature if args.temperature > 0 else 1.0,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed if args.temperature > 0 else None,
    )


def chat(args, lines=None):
    """The chat loop: reads lines (stdin, or `lines` when scripted), streams replies.

    Returns:
        A list of {"user", "assistant", "stream_equals_generate"} turns; the check
        reruns each turn's prompt through `generate` with the same arguments.
    """
    tokenizer, model = load_chat_model(args.model_dir)
    session = ChatSession(model, tokenizer, args.max_context, **generation_kwargs(args))
    interactive = lines is None
    if interactive:
        print("chat with the model ('exit' or Ctrl-D to quit, '/reset' clears the history)")
        lines = iter(lambda: input("你: "), None)
    turns = []
    for line in lines:
        line = line.strip()
        if line in ("exit", "quit"):
            break
        if line == "/reset":
            session.history = []
            continue
        if not line:
            continue
        if not interactive:
            print(f"你: {line}")
        print("助手: ", end="", flush=True)
        answer, new, prompt = session.reply(line, write=lambda s: print(s, end="", flush=True))
        print()
        turn = {"user": line, "assistant": answer, "new_ids": new}
        if not interactive:
            turn["stream_equals_generate"] = generate(model, [prompt], **session.kwargs)[0] == new
        turns.append(turn)
    return turns


def chat_forever(args):
    try:
        chat(args)
    except (EOFError, KeyboardInterrupt):
        print()


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    parser = common.base_parser(
        __doc__.splitlines()[0], lr=1e-3, epochs=12, batch_size=16, char_vocab=False
    )
    parser.add_argument("--chat", action="store_true", help="chat with a trained --model-dir")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--model-dir", default=os.path.join("runs", "sft_chat"))
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocab (at most)")
    parser.add_argument("--maxlen", type=int, default=128, help="train tokens per dialogue")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--max-context", type=int, default=256, help="chat prompt tokens")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--repetition-penalty", type=float, default=1.1)
    parser.add_argument("--samples", type=int, default=8, help="held-out prompts to answer")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.epochs, args.batch_size = "smoke", 1, 8
        args.train_limit = min(args.train_limit or 192, 192)
        args.test_limit = min(args.test_limit or 16, 16)
        args.vocab_size, args.maxlen, args.max_new_tokens = 512, 64, 3
        args.samples, args.lr = 0, 3e-3  # the scripted chat generates
        if args.model_dir == parser.get_default("model_dir"):
            args.model_dir = tempfile.mkdtemp(prefix="sft_chat_smoke_")
    common.check_args(args)
    if args.pretrained:
        raise SystemExit("--pretrained is not supported here: the model is trained from scratch")
    if not 0 < args.maxlen <= MAX_POSITION or not 0 < args.max_context <= MAX_POSITION:
        raise SystemExit(f"--maxlen and --max-context must be in 1..{MAX_POSITION}")
    if args.max_context + args.max_new_tokens > MAX_POSITION:
        raise SystemExit(f"--max-context + --max-new-tokens must be <= {MAX_POSITION}")
    return args


def train(args):
    dialogues = data.load_dialogues()
    train_set, test_set = data.split_dialogues(dialogues, args.test_fraction, args.seed)
    train_set = common.limit(train_set, args.train_limit)
    test_set = common.limit(test_set, args.test_limit)
    # The tokenizer sees the training dialogues and the template's fixed words.
    texts = [m["content"] for d in train_set for m in d["messages"]]
    texts += [data.SYSTEM, "system", "user", "assistant"] * 2
    data.train_tokenizer(texts, args.model_dir, args.vocab_size)
    tokenizer = HFTokenizer(args.model_dir)
    pad_id = tokenizer.pad_id
    train_items = data.encode_dialogues(tokenizer, train_set, args.maxlen)
    test_items = data.encode_dialogues(tokenizer, test_set, args.maxlen)

    config = model_config(args.size, tokenizer.vocab_size)
    builder = build_model(config)
    model = builder.model
    steps = args.epochs * -(-len(train_items) // args.batch_size)
    compile_model(model, args, steps)
    print(
        f"model: Qwen2 L={config['num_hidden_layers']} H={config['hidden_size']} "
        f"heads {config['num_attention_heads']}/{config['num_key_value_heads']} "
        f"({common.count_params(model) / 1e6:.2f}M params), BPE vocab {tokenizer.vocab_size}"
    )
    print(
        f"data: {len(train_items)} train / {len(test_items)} held-out dialogues, "
        f"{sum(sum(m) for _, m in train_items)} train target tokens"
    )

    # Smoke: one padded shape (bucket=None pads to maxlen), so jax compiles once;
    # else lengths 32, 64, 96, 128: four compiles.
    bucket = None if args.smoke else 32
    batches = dict(batch_size=args.batch_size, pad_id=pad_id, bucket=bucket, maxlen=args.maxlen)
    generator = data.ChatGenerator(train_items, **batches)
    train_eval = data.ChatGenerator(train_items, **batches)
    test_eval = data.ChatGenerator(test_items, **batches)
    before = {"train": masked_loss(model, train_eval), "test": masked_loss(model, test_eval)}
    log = LossLog()
    validation = {}
    if not args.smoke:
        validation = dict(validation_data=test_eval.forfit(False), validation_steps=len(test_eval))
    history = model.fit(
        generator.forfit(),
        steps_per_epoch=len(generator),
        epochs=args.epochs,
        callbacks=[log],
        verbose=0 if args.smoke else 2,
        **validation,
    )
    after = {"train": masked_loss(model, train_eval), "test": masked_loss(model, test_eval)}
    builder.save_pretrained(args.model_dir)
    print(f"saved to {args.model_dir} (config.json, model.safetensors, tokenizer files)")
    return {
        "task": "sft_chat",
        "corpus": "chatterbot-corpus 1.3.3 (chinese + traditionalchinese)",
        "model": f"Qwen2 {args.size}",
        "params": common.count_params(model),
        "vocab_size": tokenizer.vocab_size,
        "train_dialogues": len(train_items),
        "test_dialogues": len(test_items),
        "train_target_tokens": int(sum(sum(m) for _, m in train_items)),
        "epochs": args.epochs,
        "steps": steps,
        "epoch_seconds": [round(t, 1) for t in log.times],
        "loss_before": before,
        "loss_after": after,
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "prompts": [d["messages"][0]["content"] for d in test_set[: args.samples]],
        "references": [d["messages"][1]["content"] for d in test_set[: args.samples]],
    }


def sample_replies(args, prompts, references):
    """Greedy and sampled single-turn replies of the saved model to held-out prompts."""
    tokenizer, model = load_chat_model(args.model_dir)
    samples = []
    for prompt, reference in zip(prompts, references, strict=True):
        row = {"prompt": prompt, "reference": reference}
        for name, kwargs in (
            ("greedy", dict(generation_kwargs(args), method="greedy", top_p=None, seed=None)),
            ("sample", generation_kwargs(args)),
        ):
            session = ChatSession(model, tokenizer, args.max_context, **kwargs)
            row[name] = session.reply(prompt)[0]
        samples.append(row)
        print(
            f"  {prompt} -> greedy: {row['greedy']} | sample: {row['sample']} "
            f"(reference: {reference})"
        )
    return samples


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    if args.chat and not args.smoke:
        chat_forever(args)
        return None
    start = time.perf_counter()
    print(f"SFT chat, chatterbot-corpus Chinese, backend={keras.backend.backend()}")
    result = train(args)
    result["train_seconds"] = round(time.perf_counter() - start, 1)
    print(
        f"masked loss (assistant tokens) train {result['loss_before']['train']:.3f} -> "
        f"{result['loss_after']['train']:.3f}, held-out {result['loss_before']['test']:.3f} -> "
        f"{result['loss_after']['test']:.3f}"
    )
    if args.samples:
        print("held-out prompts:")
    result["samples"] = sample_replies(args, result.pop("prompts"), result.pop("references"))
    if args.smoke:
        # The chat loop on a fixed script, from the model saved on disk.
        result["chat"] = chat(args, lines=list(SCRIPTED_CHAT))
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    return common.finish(args, result)


if __name__ == "__main__":
    main()
