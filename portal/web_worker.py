"""The web tier's worker class (deploy/gunicorn.conf.py): uvicorn's gunicorn worker on an
event loop that takes one new connection per turn.

gunicorn's workers share one listening socket. Each worker's event loop, woken when
connections wait, accepts every one of them at once (asyncio: up to the backlog, 2048;
uvloop: until none is left), so a burst of new keep-alive connections (a client's pool,
the reverse proxy's upstream connections) lands on whichever worker woke first: 15 of
16 on one worker of four was measured (bench/api_bench.py), and that worker's one
core then served everything while the other workers idled. Taking one connection per
turn of the loop leaves the next ones to the other workers, which are woken for the
same connections; a worker busy with requests reaches its next turn later, so the
idle ones take more.
"""

from __future__ import annotations

import asyncio

from uvicorn_worker import UvicornWorker


class OneAcceptPerTurnEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop (epoll), accepting one pending connection per readiness event."""

    def _accept_connection(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args, **kwargs
    ):
        # backlog is only how many to accept in this turn here (the socket's own
        # listen backlog was set by gunicorn).
        return super()._accept_connection(
            protocol_factory, sock, sslcontext, server, 1, *args, **kwargs
        )


class PortalUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "portal.web_worker:OneAcceptPerTurnEventLoop", "http": "auto"}
