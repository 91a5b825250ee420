"""A limit on request bodies, enforced before the application reads them."""

import json


class BodyLimit:
    """ASGI middleware: a body larger than `max_body` bytes is a 413 JSON error.

    A declared Content-Length is checked at once; a chunked body is counted as
    it arrives, so a client cannot stream an unbounded body either.
    """

    def __init__(self, app, max_body):
        self.app = app
        self.max_body = int(max_body)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _reject(send, 400, "the Content-Length header is not a number")
            if size > self.max_body:
                return await _reject(send, 413, self._message(size))
        seen = 0
        started = rejected = False

        async def counted_receive():
            # Past the limit the client is answered 413 here and the application
            # sees a disconnect (it would turn an exception into a generic 400).
            nonlocal seen, started, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    if not started:
                        await _reject(send, 413, self._message(seen))
                    started = rejected = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)

    def _message(self, size):
        return (
            f"the request body has {size} bytes, more than this server's limit of "
            f"{self.max_body} (--max-body-bytes)"
        )


async def _reject(send, status, message):
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
