"""The floor of bench/api_bench.py: a bare ASGI app answering every request with a
short JSON body, served by the same gunicorn + uvicorn workers as the portal."""

from __future__ import annotations

_BODY = b'{"status": "ok"}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"16")]


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
