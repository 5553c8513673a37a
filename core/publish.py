"""Telling browsers (through the channel layer) without ever making the caller wait."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


class _Sender:
    """Sends to a Redis channel layer from one thread per process, in order, on one event
    loop (channels_redis keeps its connection), so the engine never waits for Redis. The
    in-memory layer is sent to at once."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._queue: queue.Queue = queue.Queue()

    def send(self, group: str, message: dict) -> None:
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            async_to_sync(layer.group_send)(group, message)
            return
        if self._pid != os.getpid():  # first use, or a forked child: a thread of its own
            self._queue = queue.Queue()
            threading.Thread(target=self._run, name="channel-sender", daemon=True).start()
            self._pid = os.getpid()
        self._queue.put((group, message))

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        jobs = self._queue
        while True:
            group, message = jobs.get()
            try:
                loop.run_until_complete(get_channel_layer().group_send(group, message))
            except Exception:  # a dead channel layer must not fail the caller
                logger.exception("publishing to %s failed", group)
            finally:
                jobs.task_done()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until every queued message is sent; True if they were."""
        if self._pid != os.getpid():
            return True
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)


_sender = _Sender()
# A short-lived process (a management command) sends what it queued before it exits.
atexit.register(_sender.flush, 2.0)


def publish_flush(timeout: float = 5.0) -> bool:
    """Wait until this process has sent what it published (the engine, after each task)."""
    return _sender.flush(timeout)


def send(group: str, message: dict, what: str) -> None:
    """Send now (queued to the sender thread); a failure is logged, never raised."""
    try:
        _sender.send(group, message)
    except Exception:  # a dead channel layer must not fail the caller
        logger.exception("publishing %s failed", what)


def send_after_commit(group: str, message: dict, what: str) -> None:
    """Send once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(group, message, what))
