"""The HTTP application: OpenAI's wire format on FastAPI.

Routes: `POST /v1/completions`, `POST /v1/chat/completions` (`stream: true`
as Server-Sent Events ending with `data: [DONE]`), `POST /v1/embeddings`
(encoder models), `GET /v1/models`, `GET /health`, and the playground at `/`.
Every error is a JSON body `{"error": {"message", "type", "param", "code"}}`
as OpenAI sends it; a request the server cannot serve is a 4xx naming the
field, never a 500.
"""

import asyncio
import base64
import json
import os
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kerasformers.serving.batcher import Batcher, Job, ServerClosing
from kerasformers.serving.embeddings import Embedder
from kerasformers.serving.limits import BodyLimit
from kerasformers.serving.schemas import ChatRequest, CompletionRequest, EmbeddingRequest

STATIC = os.path.join(os.path.dirname(__file__), "static")
COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default max_tokens of /v1/completions


class APIError(Exception):
    """A request the server refuses: becomes an OpenAI-style JSON error."""

    def __init__(self, status, message, param=None, code=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )


def error_body(message, param=None, code=None, kind="invalid_request_error"):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# What pydantic puts in an error's location for the branch of a union it tried.
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


def _validation_message(error):
    """(param, message) of pydantic's first complaint, in a client's terms."""
    first = error.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return None, f"the request body is not valid JSON: {first.get('msg')}"
    if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
        return None, "the request body must be a JSON object"
    # Union errors name the branch tried ("prompt.str"); the field is enough.
    param = ".".join(p for p in loc if p not in _TYPE_TAGS and "[" not in p)
    if first.get("type") == "missing":
        return param, f"'{param}' is required"
    value = first.get("input")
    shown = json.dumps(value)[:80] if _jsonable(value) else type(value).__name__
    return param, f"'{param}': {first.get('msg')} (got {shown})"


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def create_app(served, max_batch=8, max_tokens=256, max_body=1 << 20, window=0.01, drain=30.0):
    """The FastAPI application serving `served` (a `ServedModel`).

    Args:
        served: the model and tokenizer.
        max_batch: the most requests decoded together (1 turns batching off).
        max_tokens: the most tokens one completion may ask for.
        max_body: the largest request body, in bytes.
        window: seconds a batch waits for more requests to join it.
        drain: seconds in-flight requests get to finish at shutdown.
    """
    generation = served.kind == "generation"
    state = {"batcher": None, "embedder": None}
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        if generation:
            state["batcher"] = Batcher(served, max_batch=max_batch, window=window)
        else:
            state["embedder"] = Embedder(served)
        yield
        if state["batcher"] is not None:
            # Runs in a thread: the event loop keeps delivering the last tokens.
            await asyncio.to_thread(state["batcher"].close, drain)

    app = FastAPI(title="kerasformers", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, max_body=max_body)

    @app.exception_handler(APIError)
    async def _api_error(request, err):
        return JSONResponse(error_body(err.message, err.param, err.code, err.kind), err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err):
        param, message = _validation_message(err)
        return JSONResponse(error_body(message, param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, err):
        message = err.detail if isinstance(err.detail, str) else str(err.detail)
        if err.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(message), err.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, err):
        return JSONResponse(
            error_body(f"internal error: {type(err).__name__}: {err}", kind="server_error"), 500
        )

    # ---------------------------------------------------------------- helpers
    def check_model(name, wanted):
        if name != served.name:
            raise APIError(
                404,
                f"the model {name!r} does not exist here; this server serves {served.name!r}",
                "model",
                "model_not_found",
            )
        if served.kind != wanted:
            route = "/v1/embeddings" if served.kind == "embedding" else "/v1/completions"
            raise APIError(
                400,
                f"{served.name!r} is an {served.kind} model: it serves {route}, not this route",
                "model",
            )

    def check_supported(body):
        found = body.unsupported()
        if found:
            raise APIError(400, f"'{found[0]}': {found[1]}", found[0], "unsupported_parameter")

    def budget(ids, asked, param, default):
        """The tokens one completion may generate, checked against the limits."""
        room = None if served.context is None else served.context - len(ids)
        if room is not None and room < 1:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens, the model's context is {served.context}: "
                "no room left to generate",
                "messages" if param == "max_completion_tokens" else "prompt",
            )
        if asked is None:
            n = min(default, max_tokens)
            return n if room is None else min(n, room)
        if asked > max_tokens:
            raise APIError(
                400, f"{param} is {asked}; this server allows at most {max_tokens}", param
            )
        if room is not None and asked > room:
            raise APIError(
                400,
                f"{param} is {asked}, but the prompt's {len(ids)} tokens leave room for "
                f"{room} in the model's context of {served.context}",
                param,
            )
        return asked

    def sampling_of(body):
        greedy = body.temperature == 0
        sampling = {"method": "greedy" if greedy else "sample"}
        if not greedy:
            sampling["temperature"] = float(1.0 if body.temperature is None else body.temperature)
            sampling["top_p"] = None if body.top_p in (None, 1) else float(body.top_p)
            sampling["top_k"] = body.top_k or None
        if body.repetition_penalty not in (None, 1):
            sampling["repetition_penalty"] = float(body.repetition_penalty)
        return sampling

    def encode(fn, value, param):
        try:
            ids = fn(value)
        except (ValueError, TypeError) as err:
            raise APIError(400, f"cannot tokenize '{param}': {err}", param) from None
        if not ids:
            raise APIError(400, f"'{param}' is empty: it gives no token to start from", param)
        return ids

    def submit(prompts, limit, body, request_id):
        """Queues one job per prompt; returns (jobs, queue of (index, event))."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()
        jobs = []
        for index, ids in enumerate(prompts):

            def emit(event, index=index):
                loop.call_soon_threadsafe(queue.put_nowait, (index, event))

            jobs.append(Job(ids, limit[index], sampling_of(body), emit, body.stops(), body.seed))
        try:
            for job in jobs:
                state["batcher"].submit(job)
        except ServerClosing:
            raise APIError(503, "the server is shutting down", kind="server_error") from None
        return jobs, queue

    async def collect(jobs, queue, request):
        """Waits for every job's end; cancels them if the client goes away."""
        done = {}
        try:
            while len(done) < len(jobs):
                try:
                    index, event = await asyncio.wait_for(queue.get(), 1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise asyncio.CancelledError from None
                    continue
                if event["type"] == "error":
                    raise APIError(500, event["message"], kind="server_error")
                if event["type"] == "done":
                    done[index] = event
        finally:
            for job in jobs:
                if not job.finished:
                    job.cancel()
        return [done[i] for i in range(len(jobs))]

    def usage(prompts, completion_tokens):
        prompt_tokens = sum(len(p) for p in prompts)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    async def stream(jobs, queue, prompts, chunk, include_usage):
        """SSE: chunk(index, text, finish_reason) per event, usage, [DONE]."""
        finished, tokens = 0, 0
        try:
            for index in range(len(jobs)):
                first = chunk(index, None, None)
                if first is not None:
                    yield _sse(first)
            while finished < len(jobs):
                index, event = await queue.get()
                if event["type"] == "delta":
                    yield _sse(chunk(index, event["text"], None))
                elif event["type"] == "done":
                    finished += 1
                    tokens += event["completion_tokens"]
                    yield _sse(chunk(index, "", event["finish_reason"]))
                else:
                    yield _sse(error_body(event["message"], kind="server_error"))
                    finished += 1
            if include_usage:
                yield _sse(dict(chunk(0, "", None), choices=[], usage=usage(prompts, tokens)))
            yield "data: [DONE]\n\n"
        finally:  # also when the client disconnects: its rows leave the batch
            for job in jobs:
                if not job.finished:
                    job.cancel()

    # ---------------------------------------------------------------- routes
    @app.get("/health")
    async def health():
        status = {"status": "ok", "model": served.name, "kind": served.kind}
        if state["batcher"] is not None:
            status.update(state["batcher"].status(), max_batch=max_batch)
        return status

    def model_card():
        return {
            "id": served.name,
            "object": "model",
            "created": started,
            "owned_by": "kerasformers",
            "kind": served.kind,
            "family": served.family,
            "context": served.context,
            "chat_template": served.has_chat_template,
            "pooling": served.pooling if served.kind == "embedding" else None,
            "max_tokens": max_tokens if generation else None,
        }

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        check_model(name, served.kind)
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model, "generation")
        check_supported(body)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts:
            raise APIError(400, "'prompt' is an empty list", "prompt")
        prompts = [encode(served.encode_prompt, t, "prompt") for t in texts]
        limit = [
            budget(p, body.max_tokens, "max_tokens", COMPLETION_DEFAULT_TOKENS) for p in prompts
        ]
        request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        jobs, queue = submit(prompts, limit, body, request_id)

        def chunk(index, text, finish_reason):
            if text is None:
                return None  # completions have no opening chunk
            return {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": served.name,
                "choices": [
                    {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}
                ],
            }

        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return _sse_response(stream(jobs, queue, prompts, chunk, include))
        done = await collect(jobs, queue, request)
        return {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": served.name,
            "choices": [
                {
                    "index": i,
                    "text": d["text"],
                    "finish_reason": d["finish_reason"],
                    "logprobs": None,
                }
                for i, d in enumerate(done)
            ],
            "usage": usage(prompts, sum(d["completion_tokens"] for d in done)),
        }

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check_model(body.model, "generation")
        check_supported(body)
        messages = [{"role": m.role, "content": _content(m.content)} for m in body.messages]
        try:
            ids = encode(served.encode_chat, messages, "messages")
        except APIError:
            raise
        except Exception as err:  # a template that raises on these messages
            raise APIError(400, f"the chat template failed: {err}", "messages") from None
        asked = body.max_completion_tokens or body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        limit = [budget(ids, asked, param, max_tokens)]
        request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        jobs, queue = submit([ids], limit, body, request_id)

        def chunk(index, text, finish_reason):
            delta = {"role": "assistant", "content": ""} if text is None else {}
            if text:
                delta["content"] = text
            return {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served.name,
                "choices": [
                    {
                        "index": index,
                        "delta": delta,
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
            }

        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return _sse_response(stream(jobs, queue, [ids], chunk, include))
        (done,) = await collect(jobs, queue, request)
        return {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": served.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done["text"]},
                    "finish_reason": done["finish_reason"],
                    "logprobs": None,
                }
            ],
            "usage": usage([ids], done["completion_tokens"]),
        }

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        check_model(body.model, "embedding")
        if body.dimensions is not None:
            raise APIError(
                400, "dimensions is not supported", "dimensions", "unsupported_parameter"
            )
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise APIError(400, "'input' is an empty list", "input")
        for i, text in enumerate(texts):
            if not text:
                raise APIError(400, f"'input' item {i} is an empty string", "input")
        try:
            vectors, n_tokens = await asyncio.to_thread(state["embedder"].embed, texts)
        except ValueError as err:
            raise APIError(400, str(err), "input") from None
        data = []
        for i, vector in enumerate(vectors):
            if body.encoding_format == "base64":
                value = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                value = vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": served.name,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    # ------------------------------------------------------------- playground
    if os.path.isdir(STATIC):
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground():
        index = os.path.join(STATIC, "index.html")
        if os.path.isfile(index):
            # no-cache: an upgraded package's page is picked up at once.
            headers = {"Cache-Control": "no-cache"}
            return FileResponse(index, media_type="text/html", headers=headers)
        return HTMLResponse("<p>kerasformers: the playground is not installed.</p>")

    return app


def _content(content):
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)


def _sse(payload):
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _sse_response(events):
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["APIError", "create_app", "error_body"]
