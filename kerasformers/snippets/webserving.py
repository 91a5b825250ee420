"""`WebServing`: bert4keras' few-line HTTP interface around a Python function.

bert4keras built it on bottle; here it runs on FastAPI + uvicorn, the stack of
`kerasformers serve`. Both are imported when a `WebServing` is made, so importing
`kerasformers.snippets` needs neither.
"""

import json
import logging
import threading
import time
import warnings
from urllib.parse import parse_qsl

_LOGGER = logging.getLogger(__name__)

# bottle server names that uvicorn stands in for without a word: "paste" is bert4keras'
# default (so every ported script passes it) and "auto" means "whatever is installed".
_SILENT_SERVERS = ("paste", "auto", "uvicorn")
_WARNED_SERVERS = set()


def _import_serve():
    try:
        import fastapi
        import uvicorn
    except ImportError as e:
        raise ImportError(
            f"WebServing needs FastAPI and uvicorn ({e.name} is missing): "
            'pip install "kerasformers[serve]"'
        ) from e
    return fastapi, uvicorn


def _to_json(value):
    # numpy / jax / torch arrays and scalars, the usual results of a model call.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class WebServing:
    """A simple web interface to Python functions, bert4keras' `WebServing` on FastAPI.

    Each route calls `func(**kwargs)` with the arguments declared for it and answers
    JSON: `{"code": 0, "desc": "succeeded", "data": result}` on success; on failure
    `data` is `{}` and `code` is 1 when an argument is missing (`'lack of "text"
    argument'`) or cannot be converted (`'invalid "n" argument: ...'`), 2 when `func`
    raised (`desc` is `str(exception)`, the traceback goes to the log). The HTTP status is
    200 in all of these, as in bert4keras: clients read `code`.

    A GET route reads its arguments from the query string, a POST route from the form
    body (`application/x-www-form-urlencoded`; `multipart/form-data` needs
    `python-multipart`), never from the other one; a repeated name takes its last value.
    Values arrive as strings and go through the declared type as they are: `int("3")`,
    `float("0.5")`; `list("abc")` gives `["a", "b", "c"]`, so structured values want
    `json.loads`. `func` runs in a worker thread, several requests at once, as under
    bert4keras' default paste server.

    Departures from bert4keras:

    - `host` defaults to `"127.0.0.1"` (bert4keras: `"0.0.0.0"`): it binds to loopback
      unless told otherwise; pass `host="0.0.0.0"` to serve other machines.
    - The server is always uvicorn. `server` is accepted so ported scripts run unchanged;
      `"paste"` (the default), `"auto"` and `"uvicorn"` are silent, any other bottle
      server name ("wsgiref", "gevent", ...) warns once that uvicorn serves instead.
    - An argument whose conversion fails answers code 1 (bert4keras: an HTML 500 page),
      and so does a POST body that cannot be read; a result that JSON cannot encode
      answers code 2 (bert4keras: a 500). Nothing answers a 500 traceback page.
    - Array results (numpy, jax, torch) are sent through their `tolist()`.
    - Answers carry `Content-Type: application/json` (bert4keras: `text/html`); the
      body is the same JSON, UTF-8, non-ASCII characters unescaped.
    - A POST route also takes a JSON object body (`Content-Type: application/json`);
      its values go through the type as they are (a JSON number stays a number).
    - `wraps` returns a Starlette endpoint (`request -> response`), not a bottle handler.
    - `start(block=False)` serves from a background thread and returns a handle with
      `.url`, `.port` (the real one when `port=0`) and `.stop()`; `app` is the FastAPI
      (ASGI) application, to mount, test or run under another ASGI server.

    Args:
        host: the address to bind.
        port: the port to bind; 0 lets the OS pick a free one (see `start`).
        server: bottle's server name, kept for compatibility (see above).

    Example:
        ```python
        arguments = {"text": (None, True), "n": (int, False)}
        web = WebServing(port=8864)
        web.route("/gen_synonyms", gen_synonyms, arguments)
        web.start()
        # then open http://127.0.0.1:8864/gen_synonyms?text=你好
        ```
    """

    def __init__(self, host="127.0.0.1", port=8000, server="paste"):
        fastapi, self._uvicorn = _import_serve()
        self.host = host
        self.port = port
        self.server = server
        if server not in _SILENT_SERVERS and server not in _WARNED_SERVERS:
            _WARNED_SERVERS.add(server)
            warnings.warn(
                f"WebServing(server={server!r}): kerasformers always serves with uvicorn; "
                "the bottle server name is ignored.",
                UserWarning,
                stacklevel=2,
            )
        # Only the routes the user declares: no /docs or /openapi.json to collide with.
        self._app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @property
    def app(self):
        """The FastAPI application serving the routes (an ASGI app)."""
        return self._app

    def wraps(self, func, arguments, method="GET"):
        """Wraps `func` as an endpoint.

        Args:
            func: the function to serve; its result must be JSON-encodable (arrays are
                sent through `tolist()`).
            arguments: `{name: (type, required)}`: the arguments `func` takes from the
                request; `type` converts the string received (None keeps it), a missing
                optional argument is not passed, so `func`'s default applies.
            method: `"GET"` (arguments from the query string) or `"POST"` (from the body).

        Returns:
            An async Starlette endpoint, `request -> response`.
        """
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        method = method.upper()
        specs = []
        for key, spec in arguments.items():
            try:
                convert, required = spec
            except (TypeError, ValueError):
                raise ValueError(
                    f"arguments[{key!r}] must be a (type, required) pair, got {spec!r}"
                ) from None
            specs.append((key, convert, required))

        def answer(code, desc, data):
            outputs = {"code": code, "desc": desc, "data": data}
            try:
                body = json.dumps(outputs, ensure_ascii=False, default=_to_json)
            except (TypeError, ValueError) as e:
                return error(2, f"the result is not JSON serializable: {e}")
            return Response(body, media_type="application/json")

        def error(code, desc):
            return answer(code, desc, {})

        async def endpoint(request):
            try:
                params = await _read_params(request, method)
            except ValueError as e:
                return error(1, str(e))
            kwargs = {}
            for key, convert, required in specs:
                value = params.get(key)
                if value is None:
                    if required:
                        return error(1, f'lack of "{key}" argument')
                    continue
                if convert is not None:
                    try:
                        value = convert(value)
                    except Exception as e:
                        return error(1, f'invalid "{key}" argument: {e}')
                kwargs[key] = value
            try:
                result = await run_in_threadpool(func, **kwargs)
            except Exception as e:
                _LOGGER.exception("WebServing: %s raised", getattr(func, "__name__", func))
                return error(2, str(e))
            return answer(0, "succeeded", result)

        return endpoint

    def route(self, path, func, arguments, method="GET"):
        """Serves `func` at `path` (arguments as in `wraps`)."""
        self._app.add_route(path, self.wraps(func, arguments, method), methods=[method.upper()])

    def start(self, block=True, timeout=30.0):
        """Starts the server.

        Args:
            block: True (bert4keras' behaviour) serves until interrupted (Ctrl-C, then
                `start` returns) and logs at info level; False serves from a daemon
                thread, logs warnings only, and returns once the socket listens.
            timeout: with `block=False`, the seconds to wait for the server to listen.

        Returns:
            None when blocking; otherwise a `WebServingHandle` (`.url`, `.host`,
            `.port`, `.stop()`, usable as a context manager).
        """
        uvicorn = self._uvicorn
        config = uvicorn.Config(
            self._app, host=self.host, port=self.port, log_level="info" if block else "warning"
        )
        server = uvicorn.Server(config)
        if block:
            try:
                server.run()
            except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C; bottle.run returned
                pass
            return None
        thread = threading.Thread(target=server.run, name="WebServing", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            server.should_exit = True
            thread.join(5.0)
            why = "failed (see the log; is the port in use?)" if not thread.is_alive() else ""
            raise RuntimeError(
                f"WebServing on {self.host}:{self.port} did not start "
                f"{why or f'within {timeout} s'}"
            )
        return WebServingHandle(server, thread)


async def _read_params(request, method):
    """The request's arguments as a mapping (raises ValueError for an unreadable body)."""
    if method == "GET":
        return request.query_params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as e:
            raise ValueError(f"invalid JSON body: {e}") from None
        if not isinstance(body, dict):
            raise ValueError("a JSON body must be an object of arguments")
        return body
    if content_type == "multipart/form-data":
        try:
            return await request.form()
        except AssertionError:
            raise ValueError(
                "multipart/form-data bodies need python-multipart: pip install python-multipart"
            ) from None
        except Exception as e:
            raise ValueError(f"invalid form body: {getattr(e, 'detail', e)}") from None
    # Anything else is read as a URL-encoded form, as bottle does.
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


class WebServingHandle:
    """A `WebServing` running in a background thread (returned by `start(block=False)`)."""

    def __init__(self, server, thread):
        self._server = server
        self._thread = thread
        self.host, self.port = server.servers[0].sockets[0].getsockname()[:2]

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout=10.0):
        """Stops the server and waits (at most `timeout` seconds) for its thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # open keep-alive connections: cut them
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
