"""The web tier's event loop takes one new connection per turn (portal/web_worker.py),
so that a burst of keep-alive connections is shared by gunicorn's workers instead of
landing on whichever woke first."""

from __future__ import annotations

import asyncio
import socket
import time

from portal.web_worker import OneAcceptPerTurnEventLoop, PortalUvicornWorker


def _accepted_per_turn(
    loop_class: type[asyncio.SelectorEventLoop], connections: int
) -> tuple[list[int], float]:
    """Connections accepted by each readiness callback of the listening socket, for
    `connections` clients that connected before the loop looked, and the seconds from
    the first accept to the last."""
    per_turn: list[int] = []
    accepted = 0
    accepted_at: list[float] = []

    class Counting(socket.socket):
        def accept(self):
            nonlocal accepted
            result = super().accept()
            accepted += 1
            accepted_at.append(time.monotonic())
            return result

    class Recording(loop_class):
        def _accept_connection(self, *args, **kwargs):
            before = accepted
            result = super()._accept_connection(*args, **kwargs)
            per_turn.append(accepted - before)
            return result

    listener = Counting(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(connections)]
    loop = Recording()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        server = loop.run_until_complete(loop.create_server(asyncio.Protocol, sock=listener))
        for _ in range(50):
            loop.run_until_complete(asyncio.sleep(0.01))
            if accepted == connections:
                break
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.run_until_complete(asyncio.sleep(0.02))  # a pause ending after the close
    finally:
        for client in clients:
            client.close()
        loop.close()
    assert accepted == connections
    assert not errors
    return [n for n in per_turn if n], accepted_at[-1] - accepted_at[0]


def test_the_web_loop_accepts_one_connection_per_turn_and_then_pauses():
    per_turn, spread = _accepted_per_turn(OneAcceptPerTurnEventLoop, 6)
    assert per_turn == [1] * 6
    # Between two accepts, the pause that leaves them to the other workers.
    assert spread >= 5 * OneAcceptPerTurnEventLoop.ACCEPT_PAUSE_S * 0.9


def test_asyncio_s_own_loop_takes_them_all_at_once():
    """What the web loop changes: the stock loop empties the queue in one turn."""
    per_turn, _spread = _accepted_per_turn(asyncio.SelectorEventLoop, 6)
    assert per_turn == [6]


def test_the_gunicorn_worker_runs_on_that_loop():
    from uvicorn.config import Config

    config = Config(app=None, **PortalUvicornWorker.CONFIG_KWARGS)
    assert config.get_loop_factory() is OneAcceptPerTurnEventLoop
