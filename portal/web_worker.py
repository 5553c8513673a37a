"""The web tier's worker class (deploy/gunicorn.conf.py): uvicorn's gunicorn worker on an
event loop that shares new connections with the other workers.

An event loop woken for waiting connections accepts all of them, so a burst lands on
one worker while the others idle (docs/performance.md): this one accepts one per
readiness event, then pauses 2 ms so that the next ones go to the other workers.
"""

from __future__ import annotations

import asyncio

from uvicorn_worker import UvicornWorker


class OneAcceptPerTurnEventLoop(asyncio.SelectorEventLoop):
    """Accepts one connection per readiness event, then none for ACCEPT_PAUSE_S."""

    ACCEPT_PAUSE_S = 0.002

    def _accept_connection(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args
    ):
        # `backlog` is how many to accept in this turn (not the socket's listen backlog).
        super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args)
        if sock.fileno() == -1:
            return
        # As asyncio does when out of file descriptors: stop reading, resume a moment later.
        self._remove_reader(sock.fileno())
        again = (protocol_factory, sock, sslcontext, server, backlog, *args)
        self.call_later(self.ACCEPT_PAUSE_S, self._accept_again, *again)

    def _accept_again(self, protocol_factory, sock, sslcontext, server, backlog, *args):
        if sock.fileno() == -1 or (server is not None and not server.is_serving()):
            return  # closed meanwhile (shutdown, graceful restart)
        self._start_serving(protocol_factory, sock, sslcontext, server, backlog, *args)


class PortalUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "portal.web_worker:OneAcceptPerTurnEventLoop", "http": "auto"}
