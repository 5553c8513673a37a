"""The fenced claim a worker (or the reconciler) holds on one migration: every write
under it is a compare-and-set on `claim_epoch`, so a lost claim writes no more."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import F

from audit.events import EventType
from audit.services import Actor
from core.db import DbNow
from migrations_app.models import Migration
from migrations_app.transitions import ClaimLost, InvalidTransition, migration_change

logger = logging.getLogger(__name__)

# Past this a write gives up and leaves the migration to the reconciler.
DB_RETRY_S = 30.0

T = TypeVar("T")


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def system_actor(owner: str | None = None) -> Actor:
    return Actor.system(owner or f"worker {worker_identity()}")


@dataclass
class Lease:
    migration_id: int
    epoch: int
    owner: str
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"migration {self.migration_id}: claim {self.epoch} lost")

    def renew(self) -> None:
        """Heartbeat (the database's time) as a compare-and-set on the epoch; raises
        ClaimLost if taken over."""
        self.check()
        renewed = Migration.objects.filter(pk=self.migration_id, claim_epoch=self.epoch).update(
            heartbeat_at=DbNow()
        )
        if not renewed:
            self.lost.set()
            self.check()

    def change(
        self,
        migration: Migration,
        status: str,
        event: EventType,
        *,
        also: Callable[[Migration], None] | None = None,
        **fields,
    ) -> Migration:
        """`transitions.migration_change` under this lease, retried over database blips."""

        def write() -> Migration:
            try:
                return migration_change(
                    migration,
                    status,
                    event,
                    actor=system_actor(self.owner),
                    epoch=self.epoch,
                    also=also,
                    **fields,
                )
            except ClaimLost:
                self.lost.set()
                raise

        return db_retry(f"migration {migration.pk} -> {status}", write)


@contextlib.contextmanager
def heartbeat(lease: Lease) -> Iterator[None]:
    """Renew the lease from a thread while the block runs: slow steps are not a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.MIGRATION_HEARTBEAT_S):
                try:
                    lease.renew()
                except ClaimLost:
                    logger.warning(
                        "migration %s: claim taken over; this worker stops", lease.migration_id
                    )
                    return
                except DatabaseError as exc:  # a blip: the next beat reconnects
                    logger.warning("migration %s: heartbeat: %s", lease.migration_id, exc)
                    connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{lease.migration_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def db_retry(what: str, write: Callable[[], T]) -> T:
    """Run a database write, reconnecting on connection errors for up to DB_RETRY_S."""
    deadline = time.monotonic() + DB_RETRY_S
    while True:
        try:
            return write()
        except (ClaimLost, InvalidTransition):
            raise
        except DatabaseError as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("%s: database error, retrying: %s", what, exc)
            connection.close()
            time.sleep(1.0)


def take_over(migration: Migration, owner: str) -> Lease | None:
    """Raise the epoch only if nobody touched the migration since it was read."""
    taken = Migration.objects.filter(
        pk=migration.pk,
        claim_epoch=migration.claim_epoch,
        status=migration.status,
        heartbeat_at=migration.heartbeat_at,
    ).update(claimed_by=owner, claim_epoch=F("claim_epoch") + 1, heartbeat_at=DbNow())
    if not taken:
        return None
    return Lease(migration.pk, migration.claim_epoch + 1, owner)
