"""The web tier's worker class (deploy/gunicorn.conf.py): uvicorn's gunicorn worker on an
event loop that shares new connections with the other workers.

gunicorn's workers share one listening socket, and an event loop woken for waiting
connections accepts all of them at once: a burst of new keep-alive connections lands on
one worker while the others idle (docs/performance.md). This loop accepts one
connection per readiness event, then pauses accepting for a moment, so that the next
ones go to the other workers; a new connection may wait those 2 ms when connections
arrive faster than one worker would take them.
"""

from __future__ import annotations

import asyncio

from uvicorn_worker import UvicornWorker


class OneAcceptPerTurnEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop (epoll), accepting one pending connection per readiness event and
    then none for ACCEPT_PAUSE_S: the other workers take the next ones even when this
    loop turns faster than theirs (all 16 on one of two workers was still seen with
    one accept per turn alone)."""

    ACCEPT_PAUSE_S = 0.002

    def _accept_connection(
        self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args
    ):
        # `backlog` is only how many to accept in this turn here (the socket's own
        # listen backlog was set by gunicorn).
        super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args)
        if sock.fileno() == -1:
            return
        # As asyncio itself pauses when out of file descriptors: stop reading the
        # listening socket, and serve it again a moment later if it is still served.
        self._remove_reader(sock.fileno())
        self.call_later(
            self.ACCEPT_PAUSE_S,
            self._accept_again,
            protocol_factory,
            sock,
            sslcontext,
            server,
            backlog,
            *args,
        )

    def _accept_again(self, protocol_factory, sock, sslcontext, server, backlog, *args):
        if sock.fileno() == -1 or (server is not None and not server.is_serving()):
            return  # closed meanwhile (shutdown, graceful restart)
        self._start_serving(protocol_factory, sock, sslcontext, server, backlog, *args)


class PortalUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "portal.web_worker:OneAcceptPerTurnEventLoop", "http": "auto"}
