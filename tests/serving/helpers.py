"""Model directories made in the tests, and a real server process on loopback.

The generation model is a tiny Qwen2 (grouped-query attention, ChatML
template) over a byte-level BPE trained here; the embedding model a tiny BERT
over a WordPiece vocab.txt. Weights are randomised strongly so that a wrong
token or a forgotten cache row shows in the text.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from kerasformers.generation import generate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
START_TIMEOUT = 180.0  # seconds for a server to load, compile and answer /health


def make_generation_dir(folder):
    """A tiny Qwen2 checkpoint + tokenizer.json + ChatML template in `folder`."""
    from kerasformers.models import build_transformer_model
    from tests.conftest import randomize_weights
    from tests.tokenizers.hf_fixtures import CHATML_SPECIALS, save, train_byte_level_bpe

    tokenizer = train_byte_level_bpe(vocab_size=400, specials=CHATML_SPECIALS)
    save(
        tokenizer,
        folder,
        {"chat_template": CHATML, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    )
    vocab = tokenizer.get_vocab_size()
    config = {
        "model_type": "qwen2",
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "eos_token_id": tokenizer.token_to_id("<|im_end|>"),
    }
    builder = build_transformer_model(config, model="qwen2", return_keras_model=False)
    randomize_weights(builder.model, seed=7, scale=2.0)
    builder.save_pretrained(str(folder))
    return folder


def make_embedding_dir(folder, application="encoder"):
    """A tiny BERT (HF names) + vocab.txt in `folder`; with application="unilm"
    it has the MLM head a UniLM seq2seq model generates with."""
    from kerasformers.models import build_transformer_model
    from tests.conftest import randomize_weights
    from tests.tokenizers.hf_fixtures import train_wordpiece

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_wordpiece(vocab_size=300)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
    config = {
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "hidden_act": "gelu",
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    builder = build_transformer_model(
        config, model="bert", application=application, return_keras_model=False
    )
    randomize_weights(builder.model, seed=3)
    builder.save_weights_as_checkpoint(str(folder / "model.safetensors"))
    (folder / "tokenizer_config.json").write_text('{"do_lower_case": false}', encoding="utf-8")
    return folder


def solo(served, text, max_tokens, chat=False):
    """The reference: greedy `generate` of one prompt alone, decoded. Shapes are
    rounded up (the first max_tokens greedy tokens are those of
    max_new_tokens=max_tokens) so that jax compiles a few shapes, not one each."""
    ids = served.encode_chat(text) if chat else served.encode_prompt(text)
    out = generate(
        served.model,
        [ids],
        max_new_tokens=-(-max_tokens // 32) * 32,
        end_id=list(served.end_ids),
        pad_to=-(-len(ids) // 32) * 32,
    )[0][:max_tokens]
    return served.decode(out), len(out)


def make_t5_dir(folder):
    """A tiny T5 (HF names) + a Unigram tokenizer.json ending prompts with </s>."""
    from kerasformers.models import build_transformer_model
    from tests.conftest import randomize_weights
    from tests.tokenizers.hf_fixtures import save, train_unigram

    tokenizer = train_unigram(vocab_size=1500)
    save(tokenizer, folder, {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    config = {
        "model_type": "t5",
        "vocab_size": tokenizer.get_vocab_size(),
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 40,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 16,
        "feed_forward_proj": "relu",
        "pad_token_id": 0,
        "eos_token_id": tokenizer.token_to_id("</s>"),
        "decoder_start_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    builder = build_transformer_model(config, model="t5", return_keras_model=False)
    randomize_weights(builder.model, seed=2)
    builder.save_weights_as_checkpoint(str(folder / "model.safetensors"))
    return folder


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m kerasformers serve` in a subprocess, on a free loopback port."""

    def __init__(self, model_dir, *args, log=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "kerasformers", "serve", str(model_dir)]
        command += ["--port", str(self.port), *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.log = open(log or os.devnull, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.process.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT} s")

    def stop(self, timeout=60.0):
        """SIGTERM, then the exit code (killed after `timeout` seconds)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        return self.process.returncode


@contextlib.contextmanager
def running(model_dir, *args, log=None):
    server = Server(model_dir, *args, log=log)
    try:
        yield server
    finally:
        server.stop()
