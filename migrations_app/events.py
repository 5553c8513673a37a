"""Telling browsers about migrations: always after the change committed."""

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

from migrations_app.models import Migration
from migrations_app.serializers import MigrationSerializer

logger = logging.getLogger(__name__)


class _Sender:
    """Sends to a Redis channel layer from one thread per process, in order, on one
    event loop (so channels_redis keeps its connection instead of opening one per
    message): the engine never waits for Redis between the commit that recorded a
    change and its next step (e.g. asking libvirt to start). The in-memory layer (one
    process, tests without Redis) is sent to at once."""

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
            except Exception:  # a dead channel layer must not fail a migration
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
    """Wait until this process has sent what it published (the engine does at the end
    of each task, so a caller sees every message of a migration once it returns)."""
    return _sender.flush(timeout)


def migration_group(migration_id: int) -> str:
    return f"migration-{migration_id}"


def migration_publish(*, migration: Migration, event: str, sample: dict | None = None) -> None:
    """Send the migration's state (and the new sample, if any) to its channel group
    once the surrounding transaction commits; nobody hears of a change that rolled back."""
    message = {
        "type": "migration.update",
        "event": event,
        "migration": MigrationSerializer(migration).data,
        "sample": sample,
    }
    group = migration_group(migration.pk)

    def send() -> None:
        try:
            _sender.send(group, message)
        except Exception:  # a dead channel layer must not fail a migration
            logger.exception("publishing %s of migration %s failed", event, migration.pk)

    transaction.on_commit(send)
    if migration.batch_id is not None:  # its batch's page follows its children
        batch_publish(batch_id=migration.batch_id, event=f"child.{event}")


def batch_group(batch_id: int) -> str:
    return f"migration-batch-{batch_id}"


def batch_publish(*, batch_id: int, event: str) -> None:
    """Tell the batch's channel group that it changed, once the surrounding transaction
    commits. The message carries no state: each subscriber reads the batch when it gets
    it (migrations_app.consumers). Snapshots read here, in several task workers, could
    reach a page out of order (a worker that read 2 VMs done sending after one that
    read 3), and the page would go backwards."""

    def send() -> None:
        try:
            _sender.send(batch_group(batch_id), {"type": "batch.update", "event": event})
        except Exception:  # a dead channel layer must not fail a migration
            logger.exception("publishing %s of migration batch %s failed", event, batch_id)

    transaction.on_commit(send)
