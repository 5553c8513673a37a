"""The reconciler's pass against the real database, no hypervisor: its hosts sit at
loopback addresses nothing listens on (127.0.0.250+), so every connection fails at once
and an unreachable host leads to `needs_attention`."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.events import EventType
from audit.models import AuditEvent
from core.db import DbNow
from hosts.models import Host
from migrations_app.models import Migration, MigrationStatus, heartbeat_stale
from migrations_app.transitions import InvalidTransition
from migrations_app.worker import reconciler
from migrations_app.worker.lease import Lease, take_over
from migrations_app.worker.reconciler import migrations_reconcile

pytestmark = pytest.mark.django_db(transaction=True)

STALE = timedelta(minutes=10)


@pytest.fixture
def hosts(settings) -> tuple[Host, Host]:
    settings.MIGRATION_STALE_AFTER_S = 30
    settings.LIBVIRT_CONNECT_TIMEOUT_S = 1
    return (
        Host.objects.create(name="src", address="127.0.0.250"),
        Host.objects.create(name="dst", address="127.0.0.251"),
    )


def _running(hosts, status: str = MigrationStatus.MIGRATING, **fields) -> Migration:
    source, destination = hosts
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(),
        vm_name="web-1",
        source=source,
        destination=destination,
        requested_by_name="admin",
        status=status,
        claimed_by="gone-node:4242",
        claim_epoch=1,
        heartbeat_at=timezone.now() - STALE,
        max_downtime_ms=500,
        timeout_s=600,
        **fields,
    )


def _events(migration: Migration, event: EventType) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target_id=str(migration.pk), event_type=event))


def test_a_record_that_raises_does_not_stall_the_pass(hosts, monkeypatch, caplog):
    """Fault injection: the settlement of one stale record (`poisoned`) raises, as a
    record the lifecycle refuses would; the healthy stale one beside it is still settled,
    and the pass-wide steps still run. The failure is logged with its traceback each
    pass, and audited once for the record and error, even after two passes."""
    poisoned, healthy = _running(hosts), _running(hosts)
    settle = reconciler.migration_settle

    def settle_or_raise(migration, *args, **kwargs):
        if migration.pk == poisoned.pk:
            raise InvalidTransition(f"migration {migration.pk}: completing -> failed")
        return settle(migration, *args, **kwargs)

    monkeypatch.setattr(reconciler, "migration_settle", settle_or_raise)
    ran: list[str] = []
    for step in ("migrations_schedule_run", "migrations_dispatch_waiting", "webhooks_deliver_due"):
        real = getattr(reconciler, step)
        monkeypatch.setattr(
            reconciler,
            step,
            lambda *a, _real=real, _name=step, **kw: ran.append(_name) or _real(*a, **kw),
        )

    with caplog.at_level(logging.ERROR, logger=reconciler.__name__):
        settled = migrations_reconcile(wait_for_abort_s=0)
        # The poisoned record's new owner (the reconciler of the first pass) died too.
        Migration.objects.filter(pk=poisoned.pk).update(heartbeat_at=timezone.now() - STALE)
        migrations_reconcile(wait_for_abort_s=0)

    assert settled == [healthy.pk]
    healthy.refresh_from_db()
    assert healthy.status == MigrationStatus.NEEDS_ATTENTION
    assert len(_events(healthy, EventType.MIGRATION_NEEDS_ATTENTION)) == 1
    assert (
        ran
        == [
            "migrations_schedule_run",
            "migrations_dispatch_waiting",
            "webhooks_deliver_due",
        ]
        * 2
    )

    poisoned.refresh_from_db()
    assert (poisoned.status, poisoned.claim_epoch) == (MigrationStatus.MIGRATING, 3)
    failures = [r for r in caplog.records if f"migration {poisoned.pk}" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    [event] = _events(poisoned, EventType.MIGRATION_RECONCILE_FAILED)
    assert event.detail["step"] == "stale"
    assert event.detail["error"] == (
        f"InvalidTransition: migration {poisoned.pk}: completing -> failed"
    )
    assert (event.host_name, event.peer_host_name, event.vm_uuid) == (
        "src",
        "dst",
        poisoned.vm_uuid,
    )
    assert not _events(healthy, EventType.MIGRATION_RECONCILE_FAILED)


def test_a_failing_pass_wide_step_does_not_stop_the_next(hosts, monkeypatch):
    def broken():
        raise RuntimeError("schedule broke")

    dispatched = []
    monkeypatch.setattr(reconciler, "migrations_schedule_run", broken)
    monkeypatch.setattr(
        reconciler, "migrations_dispatch_waiting", lambda **kw: dispatched.append(kw)
    )
    stale = _running(hosts, MigrationStatus.CHECKING)
    assert migrations_reconcile(wait_for_abort_s=0) == [stale.pk]
    assert dispatched == [{"include_lost": True}]
    assert not AuditEvent.objects.filter(event_type=EventType.MIGRATION_RECONCILE_FAILED).exists()


def test_a_stale_completing_migration_is_recorded_succeeded_without_touching_a_host(
    hosts, monkeypatch
):
    """libvirt had finished when its worker died: the VM reached the destination, so the
    record is `succeeded` even though neither host answers now, and no action is taken
    on a host (nor is the `completing -> failed` the lifecycle refuses tried)."""
    monkeypatch.setattr(
        "migrations_app.worker.settlement.carry_out",
        lambda *a, **kw: pytest.fail("the reconciler acted on a host"),
    )
    completing = _running(hosts, MigrationStatus.COMPLETING)
    assert migrations_reconcile(wait_for_abort_s=0) == [completing.pk]
    completing.refresh_from_db()
    assert completing.status == MigrationStatus.SUCCEEDED
    assert [e.actor_name for e in _events(completing, EventType.MIGRATION_SUCCEEDED)] == [
        f"reconciler {reconciler.worker_identity()}"
    ]
    assert not _events(completing, EventType.MIGRATION_RECONCILE_FAILED)


def test_heartbeats_are_on_the_database_clock(hosts, monkeypatch):
    """A node's own clock plays no part: with this process's clock an hour ahead, the
    lease still writes the database's time, and staleness is decided in the query
    against the database's time."""
    renewed, behind = _running(hosts), _running(hosts)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))

    Lease(renewed.pk, renewed.claim_epoch, "worker w:1").renew()
    row = Migration.objects.annotate(db_now=DbNow()).get(pk=renewed.pk)
    assert abs((row.db_now - row.heartbeat_at).total_seconds()) < 1
    assert abs((real_now() - row.heartbeat_at).total_seconds()) < 60
    # Ten minutes behind the database's clock (not this process's): stale.
    Migration.objects.filter(pk=behind.pk).update(heartbeat_at=DbNow() - STALE)
    stale = Migration.objects.filter(heartbeat_stale()).values_list("pk", flat=True)
    assert list(stale) == [behind.pk]
    # A heartbeat the database wrote compares equal once read back: the takeover's
    # compare-and-set on the heartbeat it read still holds.
    for pk in (renewed.pk, behind.pk):
        read = Migration.objects.get(pk=pk)
        assert take_over(read, "reconciler r:1") is not None
        assert take_over(read, "reconciler r:2") is None
