"""Data side of task_sft_chat.py: the dialogue corpus, the BPE tokenizer, the loss mask.

Not part of the library: the chat example imports it so that its own file shows
the model, the training and the chat loop. Everything here is plain Python,
numpy and the `tokenizers` package; no Keras.

- `load_dialogues`: chatterbot-corpus' Chinese YAML files as conversations;
- `split_dialogues`: a fixed held-out split that keeps both scripts of a
  conversation on the same side;
- `train_tokenizer`: a byte-level BPE tokenizer trained on the training split,
  saved with a ChatML chat template as `tokenizer.json` + `tokenizer_config.json`;
- `render_with_mask`: a conversation as ids, with 1 exactly on the assistant
  tokens and the `<|im_end|>` that closes each assistant turn;
- `ChatGenerator`: bert4keras-style batches `(x, y, sample_weight)` for `fit`;
- `TextStreamer`: ids arriving one at a time -> printable text, never half a
  character.
"""

import glob
import importlib.util
import json
import os

import numpy as np

from kerasformers.snippets import DataGenerator, sequence_padding

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]  # ids 0, 1, 2
SYSTEM = "你是一个乐于助人的助手。"  # "You are a helpful assistant."

# ChatML as Qwen2 writes it: a default system turn when the conversation has none,
# then "<|im_start|>{role}\n{content}<|im_end|>\n" per message, and the header of an
# assistant turn for add_generation_prompt. Rendered the same by transformers
# (trim_blocks + lstrip_blocks): no newline follows a block tag here.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS_PACKAGE = "chatterbot_corpus"
SCRIPTS = ("chinese", "traditionalchinese")


# ----------------------------------------------------------------------------- corpus
def corpus_folder():
    """The installed chatterbot-corpus data folder (found without importing it)."""
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "package 'chatterbot-corpus' is not installed: run `make test` to set up "
            '(or pip install --no-deps "chatterbot-corpus==1.3.3")'
        )
    return os.path.join(spec.submodule_search_locations[0], "data")


def load_dialogues():
    """chatterbot-corpus' Chinese conversations, simplified and traditional.

    Each YAML file holds `conversations`: lists of utterances, each answering the
    one before, so they alternate user / assistant starting with the user.

    Returns:
        A list of dicts: `key` (file stem, index in the file: the same in both
        scripts when the two files have as many conversations), `script`,
        `messages` (`[{"role", "content"}]`, ending with an assistant turn).
    """
    import yaml  # installed with the test extras (transformers needs it)

    root = corpus_folder()
    dialogues = []
    for script in SCRIPTS:
        for path in sorted(glob.glob(os.path.join(root, script, "*.yml"))):
            with open(path, encoding="utf-8") as f:
                conversations = yaml.safe_load(f).get("conversations") or []
            stem = os.path.splitext(os.path.basename(path))[0]
            for index, utterances in enumerate(conversations):
                texts = [str(u).strip() for u in utterances if str(u).strip()]
                texts = texts[: len(texts) // 2 * 2]  # a last unanswered line is no sample
                if not texts:
                    continue
                roles = ["user", "assistant"] * (len(texts) // 2)
                messages = [{"role": r, "content": t} for r, t in zip(roles, texts, strict=True)]
                dialogues.append({"key": (stem, index), "script": script, "messages": messages})
    return dialogues


def split_dialogues(dialogues, test_fraction=0.1, seed=0):
    """A fixed split by conversation: both scripts of one conversation on one side.

    Only files with as many conversations in both scripts can hold out (their
    indices match); the others train. Exact duplicates are dropped.

    Returns:
        (train, test): lists of dialogues.
    """
    counts = {}
    for d in dialogues:
        counts.setdefault(d["key"][0], {}).setdefault(d["script"], 0)
        counts[d["key"][0]][d["script"]] += 1
    aligned = {stem for stem, c in counts.items() if len(set(c.values())) == 1 and len(c) > 1}
    keys = sorted({d["key"] for d in dialogues if d["key"][0] in aligned})
    order = np.random.default_rng(seed).permutation(len(keys))
    held = {keys[i] for i in order[: int(round(len(keys) * test_fraction))]}
    seen, train, test = set(), [], []
    for d in dialogues:
        signature = tuple((m["role"], m["content"]) for m in d["messages"])
        if signature in seen:
            continue
        seen.add(signature)
        (test if d["key"] in held else train).append(d)
    return train, test


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts, folder, vocab_size=4096, min_frequency=2):
    """Trains a byte-level BPE on `texts`; writes tokenizer.json + tokenizer_config.json.

    The special tokens come first (ids 0, 1, 2) and are never split; the 256
    byte symbols are all in the vocab, so any text encodes (unseen characters
    as their UTF-8 bytes). The corpus may run out of merges before `vocab_size`.

    Returns:
        The folder (load it with `kerasformers.tokenizers.HFTokenizer`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    os.makedirs(folder, exist_ok=True)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "model_max_length": 512,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    return folder


def render_with_mask(tokenizer, messages):
    """A conversation as ids, and its loss mask.

    The chat template renders the conversation; each assistant turn's span is
    what rendering up to that turn adds to the prompt that asks for it: its
    content and the `<|im_end|>` that ends it (the "\\n" after it is never
    generated, so it is no target). Pieces are encoded one by one, so a token
    never straddles a boundary, and the assistant's ids are those the model
    produces after a prompt ending in "<|im_start|>assistant\\n".

    Args:
        tokenizer: an `HFTokenizer` with the chat template.
        messages: `[{"role", "content"}]`.

    Returns:
        (ids, mask): lists of ints of the same length; mask is 1 on targets.
    """
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
        done = tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False)
        if not (done.startswith(prompt) and text.startswith(done)):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        end = done.rindex(IM_END) + len(IM_END)
        spans.append((len(prompt), end))
    ids, mask, position = [], [], 0
    for start, end in spans + [(len(text), len(text))]:
        for piece, target in ((text[position:start], 0), (text[start:end], 1)):
            if piece:
                piece_ids = tokenizer.encode(piece, add_special_tokens=False)[0]
                ids += piece_ids
                mask += [target] * len(piece_ids)
        position = end
    return ids, mask


def encode_dialogues(tokenizer, dialogues, maxlen):
    """(ids, mask) of every dialogue; a longer one keeps its first `maxlen` tokens
    (a cut assistant turn then has no `<|im_end|>` target; dropped if none is left)."""
    items = []
    for d in dialogues:
        ids, mask = render_with_mask(tokenizer, d["messages"])
        ids, mask = ids[:maxlen], mask[:maxlen]
        if sum(mask[1:]):
            items.append((ids, mask))
    return items


# ----------------------------------------------------------------------------- batches
class ChatGenerator(DataGenerator):
    """Batches `([token_ids], next_ids, weights)` for `fit` with a sparse cross-entropy.

    `next_ids[:, t]` is token t + 1 and `weights[:, t]` its mask bit, so the loss
    at position t is counted only where token t + 1 is an assistant target;
    padding (`pad_id`) weighs 0. Lengths are padded up to a multiple of `bucket`
    (`bucket=None`: to `maxlen`, one shape) and a short last batch is topped up
    with copies of its own items, so compiled backends see few shapes. Shuffled
    (`forfit()`), items are drawn in random order and each `pool` batches' worth
    is sorted by length before batching (numpy's global RNG, as bert4keras).
    """

    def __init__(self, data, batch_size=16, pad_id=0, bucket=16, maxlen=None, pool=32):
        super().__init__(data, batch_size)
        self.pad_id, self.bucket, self.maxlen, self.pool = pad_id, bucket, maxlen, pool

    def __iter__(self, random=False):
        # Shuffled: pools of `pool` batches are sorted by length before they are cut
        # into batches (which are then shuffled), so a batch pads little.
        window = self.batch_size * (self.pool if random else 1)
        items = []
        for is_end, item in self.sample(random):
            items.append(item)
            if len(items) == window or is_end:
                if random:
                    items.sort(key=lambda item: len(item[0]))
                batches = [
                    items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)
                ]
                order = np.random.permutation(len(batches)) if random else range(len(batches))
                for i in order:
                    yield self.collate(batches[i])
                items = []

    def collate(self, batch):
        batch = [batch[i % len(batch)] for i in range(self.batch_size)]
        if self.bucket is None:
            length = self.maxlen
        else:
            length = -(-max(len(ids) for ids, _ in batch) // self.bucket) * self.bucket
        token_ids = sequence_padding([ids for ids, _ in batch], length, value=self.pad_id)
        mask = sequence_padding([m for _, m in batch], length, value=0)
        next_ids = np.concatenate(
            [token_ids[:, 1:], np.full_like(token_ids[:, :1], self.pad_id)], 1
        )
        weights = np.concatenate([mask[:, 1:], np.zeros_like(mask[:, :1])], 1)
        return [token_ids], next_ids, weights.astype("float32")


# ----------------------------------------------------------------------------- streaming
class TextStreamer:
    """Turns ids arriving one by one into text pieces safe to print.

    Byte-level BPE spells a rare character over several tokens, each one byte
    of its UTF-8: decoding those alone gives U+FFFD. The streamer decodes all
    ids so far and hands out the new text only when it does not end in an
    unfinished character; `flush` gives what is left at the end.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids, self.printed = [], ""

    def put(self, ids):
        """Adds ids; returns the text that became printable ('' if none)."""
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.printed = text[len(self.printed) :], text
        return new

    def flush(self):
        text = self.tokenizer.decode(self.ids)
        new, self.printed = text[len(self.printed) :], text
        return new
