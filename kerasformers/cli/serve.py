"""`kerasformers serve MODEL_DIR`: the OpenAI-compatible HTTP server."""

import contextlib
import signal
import socket
import sys
import threading
import time

from kerasformers.cli.main import CLIError, first_line

MODEL_ERRORS = (ValueError, TypeError, OSError)


def add_parser(sub):
    parser = sub.add_parser(
        "serve",
        help="serve a model directory over an OpenAI-compatible HTTP API",
        description="Load the model and tokenizer of MODEL_DIR and serve /v1/completions, "
        "/v1/chat/completions (decoders, T5), /v1/embeddings (encoders), /v1/models, /health "
        "and a playground page at /, with dynamic batching of concurrent requests.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="config + weights + tokenizer")
    parser.add_argument("--model", default="auto", help="family name, or auto (config.json)")
    parser.add_argument(
        "--application",
        choices=("lm", "unilm"),
        help="serve completions from a BERT-family model built with this mask",
    )
    parser.add_argument("--name", help="the model id clients send (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--max-batch", type=int, default=16, help="requests decoded together (1: no batching)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="the most tokens one completion may ask for"
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=10.0,
        help="how long a batch waits for more requests to join",
    )
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument(
        "--pooling", choices=("cls", "mean"), default="cls", help="embeddings' pooling"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM / Ctrl-C, how long in-flight requests get to finish",
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the compile-ahead request at start"
    )
    parser.set_defaults(func=run)
    return parser


def run(args):
    for name in ("max_batch", "max_tokens", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        raise CLIError(f"--port must be in [0, 65535], got {args.port}")
    try:
        import uvicorn

        from kerasformers.serving import create_app, load_served_model
    except ImportError as err:
        raise CLIError(
            f"{err}; install the server with: pip install 'kerasformers[serve]'"
        ) from None

    began = time.monotonic()
    try:
        served = load_served_model(
            args.model_dir,
            model=args.model,
            application=args.application,
            pooling=args.pooling,
            name=args.name,
        )
    except MODEL_ERRORS as err:
        raise CLIError(first_line(err)) from None
    if not args.no_warmup:
        _warm_up(served)
    app = create_app(
        served,
        max_batch=args.max_batch,
        max_tokens=args.max_tokens,
        max_body=args.max_body_bytes,
        window=args.batch_window_ms / 1000.0,
        drain=args.drain_seconds,
    )
    # Bound here, not by uvicorn: a taken port is a one-line error (uvicorn
    # would log and exit), and --port 0 reports the port it got.
    try:
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    except OSError as err:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    port = sock.getsockname()[1]
    print(
        f"kerasformers serve: {served.name} ({served.family}, {served.kind}) ready in "
        f"{time.monotonic() - began:.1f} s on http://{args.host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=args.drain_seconds)
    with sock:
        _server_class(uvicorn)(config).run(sockets=[sock])
    return 0


def _server_class(uvicorn):
    class Server(uvicorn.Server):
        """uvicorn's server, minus the re-raise of the signal after a graceful
        shutdown: a drained SIGTERM is a clean exit (status 0) here. A second
        signal still forces the exit."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _warm_up(served):
    """Compiles the most common shape before the first client waits for it."""
    from kerasformers.serving.batcher import BUCKET, Batcher, Job
    from kerasformers.serving.embeddings import Embedder

    if served.kind == "embedding":
        Embedder(served).embed(["warm up"])
        return
    batcher = Batcher(served, max_batch=1, window=0.0)
    # A plain prompt and a short chat (a template makes prompts of 16+ tokens,
    # another width bucket).
    prompts = [served.encode_prompt("hello") or [0]]
    prompts.append(served.encode_chat([{"role": "user", "content": "hello"}]))
    for ids in prompts:
        batcher.submit(Job(ids, BUCKET, {"method": "greedy"}, lambda event: None))
    batcher.close()
