"""Serving a model over an OpenAI-compatible HTTP API (`kerasformers serve`).

`load_served_model(dir)` reads a model directory (config, weights, tokenizer);
`create_app(served)` is the FastAPI application: completions and chat
completions (streamed as Server-Sent Events), embeddings for encoders, the
model list, a health check and a playground page. Concurrent requests are
decoded together by `Batcher` (dynamic batching: new requests join at the
next batch).

Example:
    >>> import uvicorn
    >>> served = load_served_model("my-gpt2/")
    >>> uvicorn.run(create_app(served, max_batch=16), host="127.0.0.1", port=8000)
"""

from kerasformers.serving.loading import ModelDirectoryError, ServedModel, load_served_model


def create_app(served, **options):
    """The FastAPI application (see `kerasformers.serving.app.create_app`)."""
    from kerasformers.serving.app import create_app as _create_app

    return _create_app(served, **options)


__all__ = ["ModelDirectoryError", "ServedModel", "create_app", "load_served_model"]
