"""Serving throughput and latency: `kerasformers serve` with and without batching, one run.

A GPT-2-small-size model (12 layers, hidden 768, 12 heads, vocab 50257,
n_positions 1024, float32) with random weights, written once to a temporary
directory in HF format by our builder (`save_weights_as_checkpoint`, HF names;
transformers' `GPT2LMHeadModel.from_pretrained` is checked to load it with no
missing or unexpected key), with a `tokenizer.json` of the `tokenizers`
package: a WordLevel model of the 50257 tokens "t0".."t50256", split on
whitespace, decoded by joining with spaces, so that every id decodes and every
text maps back to its ids. The config has no eos_token_id: every request
generates exactly its `max_tokens`.

Every request is a 16-token prompt (different per request, a deterministic
rng) asking for 64 new tokens, greedy (temperature 0), on /v1/completions over
loopback (every client thread has its connection open before a phase starts, and
all start together). For each backend (jax, torch; each server its own process, 2
threads) the server runs with batching on (`--max-batch 16`) and off
(`--max-batch 1`), is warmed up with untimed requests (one request holding
1, 2, 4, 8, 16 prompts, so that jax compiles every bucketed batch shape before
the clock runs, then one round at every concurrency), and then, for
concurrency c in 1, 4, 16, c client threads (httpx, closed loop: each sends
its next request when its last one is answered) send max(16, 2c) requests in
all. Latency = send -> full response; throughput = generated tokens
(usage.completion_tokens, checked to be 64 each) / wall time of the phase.

Baselines in the same run: HF `GPT2LMHeadModel.generate` serving the same
prompts one by one (greedy, min_new_tokens = max_new_tokens = 64, torch 2
threads, no HTTP), and `transformers serve` (transformers' own OpenAI server)
on the same directory, offline, when it starts within a bounded time.

Targets (issue 14): at concurrency 16 with batching on, >= 4x the throughput of
one-by-one serving, and p99 latency <= 3x the solo latency (c = 1 p50).

    python benchmarks/serving.py
    python benchmarks/serving.py --backend jax --requests 8
    python benchmarks/serving.py --quick          # 2 layers, hidden 64: checks the script
"""

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import cpu_description  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = "2"
VOCAB = 50257
PROMPT = 16
CONCURRENCY = (1, 4, 16)
WARM_ROWS = (1, 2, 4, 8, 16)  # one request with this many prompts: every jax bucket
MAX_BATCH = 16
BARRIER_TIMEOUT = 60.0  # seconds for the client threads to connect
START_TIMEOUT = 300.0  # our server: load + compile-ahead + /health
HF_SERVE_START = 60.0  # transformers serve: give up after this
WARM_OFFSET = 100_000  # warm-up prompts are drawn after the timed ones
GROUP_GAP = 0.1  # responses closer than this (s, at most 0.2 x the fastest) are one burst


def model_config(layers, hidden):
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": VOCAB,
        "n_embd": hidden,
        "n_layer": layers,
        "n_head": max(1, hidden // 64),
        "n_positions": 1024,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }


def prompt_ids(index):
    """The 16 ids of request `index` (deterministic, different per request)."""
    import numpy as np

    rng = np.random.default_rng([0, index])
    return rng.integers(0, VOCAB, PROMPT).tolist()


def prompt_text(index):
    return " ".join(f"t{i}" for i in prompt_ids(index))


def text_ids(text):
    """Ids of a completion text of our WordLevel tokenizer ("t12 t7 ...")."""
    try:
        return [int(tok[1:]) for tok in text.split()]
    except ValueError:
        return None


# ------------------------------------------------------------------ workers
def worker_prepare(directory, layers, hidden):
    """Writes config.json, model.safetensors (our builder) and tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from kerasformers.models import build_transformer_model

    config = model_config(layers, hidden)
    start = time.perf_counter()
    builder = build_transformer_model(dict(config), model="gpt2", return_keras_model=False)
    builder.save_weights_as_checkpoint(os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    vocab = {f"t{i}": i for i in range(VOCAB)}
    # No decoder: the tokenizers package then joins tokens with spaces.
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    # For transformers' AutoTokenizer (transformers serve); ours reads only the
    # chat template and named special tokens from it (none here).
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)
    params = sum(math.prod(w.shape) for w in builder.model.weights)
    assert tokenizer.get_vocab_size() == VOCAB
    sample = list(range(VOCAB - 5, VOCAB)) + [0, 1]
    decoded = tokenizer.decode(sample)
    assert decoded == " ".join(f"t{i}" for i in sample), decoded
    assert tokenizer.encode(decoded).ids == sample
    return {"seconds": time.perf_counter() - start, "params": params}


def worker_hf(directory, count, new):
    """HF generate, one request at a time; also checks the checkpoint's keys."""
    import torch
    import transformers

    torch.set_num_threads(int(THREADS))
    model, info = transformers.GPT2LMHeadModel.from_pretrained(
        directory, output_loading_info=True, dtype=torch.float32
    )
    model = model.eval()
    model.generation_config.eos_token_id = None
    keys = {k: sorted(v) for k, v in info.items() if v and k != "error_msgs"}
    # The tied LM head may be reported missing (it is the embedding table).
    bad_missing = [k for k in keys.get("missing_keys", []) if k != "lm_head.weight"]

    def run(ids):
        with torch.no_grad():
            out = model.generate(
                torch.as_tensor([ids], dtype=torch.long),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )
        assert out.shape[1] == len(ids) + new
        return out[0, len(ids) :].tolist()

    run(prompt_ids(WARM_OFFSET))  # untimed
    latencies, tokens = [], []
    began = time.perf_counter()
    for index in range(count):
        start = time.perf_counter()
        tokens.append(run(prompt_ids(index)))
        latencies.append(time.perf_counter() - start)
    wall = time.perf_counter() - began
    return {
        "latencies": latencies,
        "wall": wall,
        "tokens_total": sum(len(t) for t in tokens),
        "tokens": tokens,
        "loading_info": keys,
        "bad_keys": bad_missing + keys.get("unexpected_keys", []) + keys.get("mismatched_keys", []),
        "tied": bool(model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()),
    }


def _run_worker(kind, backend, args_list, timeout):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        TF_CPP_MIN_LOG_LEVEL="3",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, *args_list]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(lines[-1])


# ------------------------------------------------------------------ servers
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server subprocess on a free loopback port, its output in a log file."""

    def __init__(self, command, env, log_path, start_timeout, deadline):
        import httpx

        self.url = None
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [c.replace("{port}", str(port)) for c in command]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        began = time.monotonic()
        limit = min(began + start_timeout, deadline)
        while True:
            if self.process.poll() is not None:
                self.close()
                raise RuntimeError(f"exited with code {self.process.returncode}: {self.tail(1)}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > limit:
                self.close()
                raise RuntimeError(
                    f"no /health within {time.monotonic() - began:.0f} s: {self.tail()}"
                )
            time.sleep(0.25)
        self.start_seconds = time.monotonic() - began

    def tail(self, lines=2):
        try:
            with open(self.log_path) as f:
                text = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-400:]

    def health(self):
        import httpx

        try:
            return httpx.get(self.url + "/health", timeout=10.0).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def close(self, timeout=30.0):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def server_env(backend):
    return dict(
        os.environ,
        KERAS_BACKEND=backend,
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )


def ours_command(directory, max_batch, new, window_ms=None):
    command = [
        sys.executable, "-m", "kerasformers", "serve", directory, "--port", "{port}",
        "--max-batch", str(max_batch), "--max-tokens", str(new), "--name", "bench",
    ]  # fmt: skip
    if window_ms is not None:
        command += ["--batch-window-ms", str(window_ms)]
    return command


def hf_serve_command(directory, continuous):
    launcher = "import sys; from transformers.cli.transformers import main; sys.exit(main())"
    command = [
        sys.executable, "-c", launcher, "serve", directory, "--host", "127.0.0.1",
        "--port", "{port}", "--device", "cpu", "--dtype", "float32", "--log-level", "warning",
    ]  # fmt: skip
    if continuous:
        command.append("--continuous-batching")
    return command


# ------------------------------------------------------------------ clients
def completion_body(kind, model, prompt, new):
    body = {"model": model, "prompt": prompt, "max_tokens": new, "temperature": 0}
    if kind == "hf-serve":
        # Its own generation config replaces the model's: exactly `new` tokens, greedy.
        body["generation_config"] = json.dumps(
            {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}
        )
    return body


def closed_loop(url, kind, model, indices, concurrency, new, deadline):
    """`concurrency` client threads send the requests of `indices`, each its next
    one when its last is answered. Returns latencies, tokens, wall, errors."""
    import httpx

    lock = threading.Lock()
    todo = list(indices)
    done = {}
    errors = []

    # Every client opens its connection first, then all start together: a
    # phase's first requests reach the server at once, as in a running loop.
    barrier = threading.Barrier(concurrency + 1)

    def client():
        with httpx.Client(timeout=httpx.Timeout(max(5.0, deadline - time.monotonic()))) as http:
            try:
                http.get(url + "/health")
            except httpx.HTTPError:
                pass
            try:
                barrier.wait(BARRIER_TIMEOUT)
            except threading.BrokenBarrierError:
                with lock:
                    errors.append("the clients did not all get ready")
                return
            while True:
                with lock:
                    if not todo or errors or time.monotonic() > deadline:
                        return
                    index = todo.pop(0)
                body = completion_body(kind, model, prompt_text(index), new)
                start = time.perf_counter()
                try:
                    response = http.post(url + "/v1/completions", json=body)
                    end = time.perf_counter()
                    payload = response.json()
                except (httpx.HTTPError, ValueError) as err:
                    with lock:
                        errors.append(f"request {index}: {type(err).__name__}: {err}")
                    return
                if response.status_code != 200:
                    with lock:
                        errors.append(f"request {index}: HTTP {response.status_code} {payload}")
                    return
                usage = payload.get("usage") or {}
                text = payload["choices"][0]["text"]
                done[index] = {
                    "start": start,
                    "end": end,
                    "latency": end - start,
                    "completion_tokens": usage.get("completion_tokens"),
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "ids": text_ids(text),
                }

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(BARRIER_TIMEOUT)
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic() + 30.0))
    if any(thread.is_alive() for thread in threads):
        errors.append("client threads still running at the deadline")
    rows = [done[i] for i in indices if i in done]
    if len(rows) < len(indices) and not errors:
        errors.append(f"only {len(rows)} of {len(indices)} requests done before the deadline")
    wrong = [r["completion_tokens"] for r in rows if r["completion_tokens"] != new]
    if wrong:
        errors.append(f"completion_tokens != {new}: {wrong[:4]}")
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows) if rows else float("nan")
    return {
        "groups": response_groups(
            [r["end"] for r in rows], min([GROUP_GAP] + [0.2 * r["latency"] for r in rows])
        ),
        "load": os.getloadavg()[0],
        "latencies": [r["latency"] for r in rows],
        "tokens_total": sum(r["completion_tokens"] or 0 for r in rows),
        "wall": wall,
        "ids": {i: done[i]["ids"] for i in indices if i in done},
        "prompt_tokens": sorted({r["prompt_tokens"] for r in rows}, key=str),
        "errors": errors,
    }


def response_groups(ends, gap=GROUP_GAP):
    """Sizes of the bursts of responses (ends closer than `gap` s): the rows of
    one batch, which all finish at its last step, arrive as one burst."""
    groups = []
    last = None
    for end in sorted(ends):
        if last is None or end - last > gap:
            groups.append(0)
        groups[-1] += 1
        last = end
    return groups


def warm_up(proc, kind, model, new, max_rows, deadline):
    """Untimed: multi-prompt requests of every bucketed batch size, then one
    closed-loop round at every concurrency. Returns seconds spent."""
    import httpx

    began = time.monotonic()
    index = WARM_OFFSET
    if kind == "ours":
        for rows in WARM_ROWS:
            if rows > max_rows or time.monotonic() > deadline:
                break
            prompts = [prompt_text(index + k) for k in range(rows)]
            index += rows
            body = completion_body(kind, model, prompts, new)
            timeout = max(5.0, deadline - time.monotonic())
            response = httpx.post(proc.url + "/v1/completions", json=body, timeout=timeout)
            if response.status_code != 200:
                raise RuntimeError(f"warm-up: HTTP {response.status_code} {response.text[:300]}")
    for c in CONCURRENCY:
        indices = list(range(index, index + c))
        index += c
        res = closed_loop(proc.url, kind, model, indices, c, new, deadline)
        if res["errors"]:
            raise RuntimeError(f"warm-up at c={c}: {res['errors'][0]}")
    return time.monotonic() - began


def measure_server(proc, kind, model, new, max_rows, counts, deadline, concurrencies):
    warm = warm_up(proc, kind, model, new, max_rows, deadline)
    phases = {}
    for c in concurrencies:
        before = proc.health()
        res = closed_loop(proc.url, kind, model, list(range(counts[c])), c, new, deadline)
        after = proc.health()
        if "batches" in before and "batches" in after:
            res["batches"] = after["batches"] - before["batches"]
            res["completed"] = after["completed"] - before["completed"]
        phases[c] = res
        print(f"    c={c:2d}: {_summary(res)}", file=sys.stderr, flush=True)
        if res["errors"]:
            break
    final = proc.health()
    return {"warm_seconds": warm, "phases": phases, "health": final}


def _summary(res):
    if not res["latencies"]:
        return f"no result ({'; '.join(res['errors'])[:200]})"
    p50, p99 = percentiles(res["latencies"])
    text = f"{res['tokens_total'] / res['wall']:.1f} tok/s, p50 {p50:.2f} s, p99 {p99:.2f} s"
    if res.get("batches"):
        text += f", {res['batches']} batches ({res['completed'] / res['batches']:.1f} rows each)"
    text += f", bursts {_groups(res['groups'])}, load {res['load']:.1f}"
    if res["errors"]:
        text += f" ERRORS: {'; '.join(res['errors'])[:200]}"
    return text


def _groups(groups):
    if len(groups) > 12:
        return "[" + " ".join(map(str, groups[:12])) + f" ... ({len(groups)})]"
    return "[" + " ".join(map(str, groups)) + "]"


def percentiles(values):
    import numpy as np

    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


# ------------------------------------------------------------------ report
def agreement(ids_by_index, hf_tokens):
    """(identical requests, compared, shortest common prefix) against HF's tokens."""
    same, compared, prefix = 0, 0, None
    for index, ids in ids_by_index.items():
        if index >= len(hf_tokens) or ids is None:
            continue
        ref = hf_tokens[index]
        compared += 1
        same += ids == ref
        n = next((k for k, (a, b) in enumerate(zip(ids, ref, strict=False)) if a != b), len(ref))
        prefix = n if prefix is None else min(prefix, n)
    return same, compared, prefix


def report(results, args, counts):
    new = args.new_tokens
    hf = results.get("hf")
    print(
        f"\nServing, GPT-2 size ({args.layers} layers, hidden {args.hidden}, vocab {VOCAB}, "
        f"random weights, float32), {PROMPT}-token prompts + {new} new tokens, greedy, "
        f"/v1/completions over loopback, closed loop; server {THREADS} threads; "
        f"requests per concurrency: {', '.join(f'c={c}: {n}' for c, n in counts.items())}; "
        f"our --batch-window-ms: {args.batch_window_ms or 'the default'}"
    )
    print(f"CPU: {cpu_description()}")
    print(f"load average before / after: {results['load_before']:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"checkpoint: {results.get('prepare')}")
    hf_tok_s = None
    if hf is None or "error" in hf:
        print(f"HF generate one by one: n/a ({(hf or {}).get('error', 'not run')[:300]})")
    else:
        hf_tok_s = hf["tokens_total"] / hf["wall"]
        p50, p99 = percentiles(hf["latencies"])
        keys = f"bad keys: {hf['bad_keys']}" if hf["bad_keys"] else "no missing/unexpected key"
        print(
            f"HF GPT2LMHeadModel.from_pretrained: loading info {hf['loading_info'] or 'clean'}"
            f"{' (lm_head tied to wte)' if hf['tied'] else ''}; {keys}"
        )
        print(
            f"HF generate, one by one ({len(hf['latencies'])} requests, no HTTP): "
            f"{hf_tok_s:.1f} tok/s, p50 {p50:.2f} s, p99 {p99:.2f} s"
        )

    for name, entry in results.get("hf_serve", {}).items():
        if "error" in entry:
            print(f"{name}: not measured ({entry['error'][:300]})")
            continue
        cells = []
        for c, res in entry["phases"].items():
            if res["latencies"]:
                p50, p99 = percentiles(res["latencies"])
                cells.append(
                    f"c={c}: {res['tokens_total'] / res['wall']:.1f} tok/s, p50 {p50:.2f} s, "
                    f"p99 {p99:.2f} s"
                )
            if res["errors"]:
                cells.append(f"c={c} errors: {res['errors'][0][:160]}")
        print(f"{name} (started in {entry['start_seconds']:.0f} s): " + "; ".join(cells))
        res = entry["phases"].get(max(CONCURRENCY))
        if res and res["ids"] and hf_tok_s:
            same, compared, prefix = agreement(res["ids"], hf["tokens"])
            print(f"  tokens = HF generate's: {same} of {compared} requests identical")

    for backend in args.backend if "ours" in args.only else ():
        ours = results.get(backend, {})
        print(f"\nkerasformers serve, KERAS_BACKEND={backend}")
        for mode in ("on", "off"):
            entry = ours.get(mode, {})
            if "error" in entry:
                print(f"  batching {mode}: n/a ({entry['error'][:300]})")
            elif entry:
                h = entry["health"]
                print(
                    f"  batching {mode}: started in {entry['start_seconds']:.0f} s, warm-up "
                    f"{entry['warm_seconds']:.0f} s; /health at the end: batches "
                    f"{h.get('batches')}, largest_batch {h.get('largest_batch')}, completed "
                    f"{h.get('completed')}, cancelled {h.get('cancelled')}"
                )
        header = (
            f"  {'concurrency':>11s} | {'batching on (--max-batch 16)':^44s} | "
            f"{'batching off (--max-batch 1)':^32s}"
        )
        print(header)
        print(
            f"  {'':>11s} | {'tok/s':>8s} {'p50 s':>7s} {'p99 s':>7s} {'batches':>8s} "
            f"{'rows/b':>7s} | {'tok/s':>8s} {'p50 s':>7s} {'p99 s':>7s} {'':>6s}"
        )
        table = {}
        for c in CONCURRENCY:
            cells = []
            for mode in ("on", "off"):
                res = ours.get(mode, {}).get("phases", {}).get(c)
                if not res or not res["latencies"]:
                    cells.append(f"{'n/a':>8s} {'':>7s} {'':>7s}")
                    if mode == "on":
                        cells[-1] += f" {'':>8s} {'':>7s}"
                    continue
                tok_s = res["tokens_total"] / res["wall"]
                p50, p99 = percentiles(res["latencies"])
                table[(mode, c)] = (tok_s, p50, p99)
                cell = f"{tok_s:8.1f} {p50:7.2f} {p99:7.2f}"
                if mode == "on":
                    b = res.get("batches")
                    rows = f"{res['completed'] / b:.1f}" if b else "-"
                    cell += f" {b if b is not None else '-':>8} {rows:>7s}"
                cells.append(cell)
            print(f"  {c:>11d} | {cells[0]} | {cells[1]}")
        for mode in ("on", "off"):
            phases = ours.get(mode, {}).get("phases", {})
            if phases:
                print(
                    f"  batching {mode}: bursts of responses (~ batches as decoded) "
                    + ", ".join(f"c={c} {_groups(r['groups'])}" for c, r in phases.items())
                    + "; load average at the end of each: "
                    + " ".join(f"{r['load']:.1f}" for r in phases.values())
                )
        top = max(CONCURRENCY)
        on16, off16, solo = table.get(("on", top)), table.get(("off", top)), table.get(("on", 1))
        if on16 and off16:
            r = on16[0] / off16[0]
            print(
                f"  throughput c={top} batching on / batching off c={top}: {r:.2f}x "
                f"(target >= 4x: {'PASS' if r >= 4 else 'MISS'})"
            )
        if on16 and hf_tok_s:
            r = on16[0] / hf_tok_s
            print(
                f"  throughput c={top} batching on / HF generate one by one: {r:.2f}x "
                f"(target >= 4x: {'PASS' if r >= 4 else 'MISS'})"
            )
        if on16 and solo:
            r = on16[2] / solo[1]
            print(
                f"  p99 c={top} batching on / solo latency (c=1 p50, batching on, "
                f"{solo[1]:.2f} s): {r:.2f}x (target <= 3x: {'PASS' if r <= 3 else 'MISS'})"
            )
        if off16 and solo:
            print(f"  (p99 c={top} batching off / solo: {off16[2] / solo[1]:.2f}x)")
        if hf is not None and "error" not in hf:
            for mode in ("on", "off"):
                res = ours.get(mode, {}).get("phases", {}).get(top)
                if res and res["ids"]:
                    same, compared, prefix = agreement(res["ids"], hf["tokens"])
                    print(
                        f"  tokens = HF's (c={top}, batching {mode}): {same} of {compared} "
                        f"requests identical; shortest identical prefix {prefix} of {new}"
                    )
        for mode in ("on", "off"):
            for c, res in ours.get(mode, {}).get("phases", {}).items():
                if res["errors"]:
                    print(f"  errors (batching {mode}, c={c}): {'; '.join(res['errors'])[:300]}")
                if res["prompt_tokens"] not in ([PROMPT], []):
                    print(f"  prompt_tokens seen (batching {mode}, c={c}): {res['prompt_tokens']}")


# ------------------------------------------------------------------ main
def run_server(label, command, env, kind, log_path, max_rows, counts, deadline, concurrencies,
               start_timeout, model, new):  # fmt: skip
    print(f"  {label}: starting", file=sys.stderr, flush=True)
    try:
        proc = Process(command, env, log_path, start_timeout, deadline)
    except RuntimeError as err:
        print(f"  {label}: {err}", file=sys.stderr, flush=True)
        return {"error": f"did not start: {err}"}
    try:
        result = measure_server(proc, kind, model, new, max_rows, counts, deadline, concurrencies)
        result["start_seconds"] = proc.start_seconds
        return result
    except Exception as err:  # report and go on with the next server
        print(f"  {label}: {err}", file=sys.stderr, flush=True)
        return {"error": f"{type(err).__name__}: {err} (log: {proc.tail()})"}
    finally:
        proc.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=("prepare", "hf"))
    parser.add_argument("--dir", help="(worker) the model directory")
    parser.add_argument("--count", type=int, default=1, help="(worker hf) requests")
    parser.add_argument("--backend", nargs="+", choices=("jax", "torch"), default=["jax", "torch"])
    parser.add_argument(
        "--requests", type=int, help="requests per concurrency (default max(16, 2c))"
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--batching", nargs="+", choices=("on", "off"), default=["on", "off"],
        help="our server's modes to run (default both)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-window-ms", type=float, help="passed to our server (default: the server's own)"
    )
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--quick", action="store_true", help="a tiny model (2 layers, hidden 64)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("hf", "ours", "hf-serve"),
        default=["hf", "ours", "hf-serve"],
        help="what to run: HF generate, our server, `transformers serve` (default all)",
    )
    parser.add_argument(
        "--deadline", type=float, default=2400.0, help="seconds for the whole run (default 2400)"
    )
    parser.add_argument("--keep", help="model directory to reuse (created if missing)")
    parser.add_argument("--logs", help="folder for the servers' logs (default: a temp folder)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.layers, args.hidden = 2, 64

    if args.worker == "prepare":
        print(json.dumps(worker_prepare(args.dir, args.layers, args.hidden)))
        return
    if args.worker == "hf":
        print(json.dumps(worker_hf(args.dir, args.count, args.new_tokens)))
        return

    began = time.monotonic()
    deadline = began + args.deadline
    counts = {c: args.requests or max(16, 2 * c) for c in CONCURRENCY}
    results = {"load_before": os.getloadavg()[0]}
    print(f"CPU: {cpu_description()}", flush=True)
    print(f"load average before: {results['load_before']:.2f}", flush=True)

    tmp = tempfile.TemporaryDirectory(prefix="kf_serving_")
    directory = args.keep or os.path.join(tmp.name, "gpt2")
    logs = args.logs or tmp.name
    os.makedirs(directory, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    size = ["--layers", str(args.layers), "--hidden", str(args.hidden)]
    if not os.path.exists(os.path.join(directory, "model.safetensors")):
        res = _run_worker("prepare", "torch", ["--dir", directory, *size], timeout=600)
        if "error" in res:
            raise SystemExit(f"could not write the model: {res['error']}")
        results["prepare"] = res
        print(f"  model written in {res['seconds']:.1f} s ({res['params']:,} weights)",
              file=sys.stderr, flush=True)  # fmt: skip

    top = max(CONCURRENCY)
    hf = {"error": "not run (--only)"}
    if "hf" in args.only:
        print("  HF generate, one by one", file=sys.stderr, flush=True)
        hf_args = ["--dir", directory, "--count", str(counts[top])]
        hf_args += ["--new-tokens", str(args.new_tokens)]
        hf = _run_worker("hf", "torch", hf_args, timeout=max(10.0, deadline - time.monotonic()))
    results["hf"] = hf
    if "error" in hf:
        print(f"    error: {hf['error']}", file=sys.stderr, flush=True)
    else:
        print(
            f"    {hf['tokens_total'] / hf['wall']:.1f} tok/s; loading info "
            f"{hf['loading_info'] or 'clean'}",
            file=sys.stderr,
            flush=True,
        )

    for backend in args.backend if "ours" in args.only else ():
        results[backend] = {}
        for mode, max_batch in (("on", MAX_BATCH), ("off", 1)):
            if mode not in args.batching:
                continue
            if time.monotonic() > deadline:
                results[backend][mode] = {"error": "the global deadline passed"}
                continue
            results[backend][mode] = run_server(
                f"ours {backend} batching {mode}",
                ours_command(directory, max_batch, args.new_tokens, args.batch_window_ms),
                server_env(backend),
                "ours",
                os.path.join(logs, f"ours-{backend}-{mode}.log"),
                max_batch,
                counts,
                deadline,
                CONCURRENCY,
                START_TIMEOUT,
                "bench",
                args.new_tokens,
            )

    results["hf_serve"] = {}
    if "hf-serve" in args.only:
        for continuous in (False, True):
            name = "transformers serve" + (" --continuous-batching" if continuous else "")
            if time.monotonic() > deadline:
                results["hf_serve"][name] = {"error": "the global deadline passed"}
                continue
            results["hf_serve"][name] = run_server(
                name,
                hf_serve_command(directory, continuous),
                server_env("torch"),
                "hf-serve",
                os.path.join(logs, f"hf-serve-{int(continuous)}.log"),
                top,
                counts,
                deadline,
                (1, top),
                HF_SERVE_START,
                directory,
                args.new_tokens,
            )

    report(results, args, counts)
    print(f"\ntotal time {time.monotonic() - began:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
