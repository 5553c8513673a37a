"""Fencing of migration records against the real database (no hypervisor needed):
a worker that lost its claim writes nothing, and final records stay final."""

from __future__ import annotations

import time
import uuid

import pytest
from django.utils import timezone

from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.models import Migration, MigrationStatus
from migrations_app.transitions import ClaimLost, InvalidTransition
from migrations_app.worker import lease as worker_lease
from migrations_app.worker.lease import Lease, take_over

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(admin_user) -> Migration:
    source = Host.objects.create(name="src", address="192.0.2.30")
    destination = Host.objects.create(name="dst", address="192.0.2.31")
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(),
        vm_name="web-1",
        source=source,
        destination=destination,
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        status="migrating",
        claimed_by="w:1",
        claim_epoch=1,
        heartbeat_at=timezone.now(),
        max_downtime_ms=500,
        timeout_s=600,
    )


def _events(migration: Migration) -> list[str]:
    return list(
        AuditEvent.objects.filter(target_id=str(migration.pk)).values_list("event_type", flat=True)
    )


def test_a_worker_that_lost_its_claim_writes_nothing(running):
    worker = Lease(running.pk, 1, "worker w:1")
    reconciler = take_over(running, "reconciler r:1")
    assert reconciler is not None and reconciler.epoch == 2
    reconciler.change(
        running,
        MigrationStatus.FAILED,
        EventType.MIGRATION_FAILED,
        error="settled by the reconciler",
    )
    before = Migration.objects.values().get(pk=running.pk)
    events = _events(running)

    with pytest.raises(ClaimLost):
        worker.change(running, MigrationStatus.COMPLETING, EventType.MIGRATION_COMPLETING)
    with pytest.raises(ClaimLost):
        worker.renew()
    assert worker.lost.is_set()
    assert Migration.objects.values().get(pk=running.pk) == before
    assert _events(running) == events == ["migration.failed"]


def test_a_final_record_never_moves_back(running):
    lease = Lease(running.pk, 1, "worker w:1")
    lease.change(running, MigrationStatus.FAILED, EventType.MIGRATION_FAILED, error="x")
    with pytest.raises(InvalidTransition):
        lease.change(running, MigrationStatus.MIGRATING, EventType.MIGRATION_STARTED)
    assert Migration.objects.get(pk=running.pk).status == "failed"


def test_only_one_of_two_reconcilers_takes_over(running):
    stale = Migration.objects.get(pk=running.pk)
    first = take_over(stale, "reconciler a")
    second = take_over(stale, "reconciler b")  # read the same row, lost the race
    assert first is not None and second is None
    assert Migration.objects.get(pk=running.pk).claimed_by == "reconciler a"


def test_take_over_refused_after_a_fresh_heartbeat(running):
    read = Migration.objects.get(pk=running.pk)
    time.sleep(0.01)
    Lease(running.pk, 1, "worker w:1").renew()  # the worker was alive after all
    assert take_over(read, "reconciler") is None


def _eventually(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_heartbeat_thread_renews_until_taken_over(running, settings):
    settings.MIGRATION_HEARTBEAT_S = 0.1
    Migration.objects.filter(pk=running.pk).update(heartbeat_at=None)
    lease = Lease(running.pk, 1, "worker w:1")

    def heartbeat():
        return Migration.objects.get(pk=running.pk).heartbeat_at

    with worker_lease.heartbeat(lease):
        first = _eventually(heartbeat, "a first heartbeat")
        _eventually(lambda: heartbeat() > first, "a second heartbeat")
        assert take_over(Migration.objects.get(pk=running.pk), "reconciler") is not None
        _eventually(lease.lost.is_set, "the worker to notice the takeover")
        # The reconciler's own heartbeat is never overwritten by the old worker.
        taken_at = heartbeat()
        time.sleep(0.5)  # five beat intervals
        assert heartbeat() == taken_at
