"""Scheduled migrations on real lab hosts, run by real worker processes
(`manage.py run_workers`: django-q2 cluster + the reconciler loop): a migration
scheduled ahead starts on time although every worker process was restarted while it
waited, and one whose window closes while it waits for a slot fails and moves nothing.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from migrations_app.models import Migration
from tests import labtools
from tests.labtools import events_of, request_migration, wait_final

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

# How late a scheduled migration may start (docs/reliability.md gives the bound).
START_DELAY_MAX_S = 5.0


def test_scheduled_migration_starts_on_time_after_the_workers_restarted(api, linux_vm, workers):
    workers.start()
    source = linux_vm.source
    destination = linux_vm.other(source)
    # One minute ahead, as an operator would schedule it (issue #11's case).
    not_before = timezone.now() + timedelta(seconds=60)
    migration_id = request_migration(
        api,
        linux_vm.uuid,
        remote_host=destination.name,
        delete_source=True,
        not_before=not_before.isoformat(),
    )
    assert Migration.objects.get(pk=migration_id).status == "scheduled"

    # Every worker process goes away and comes back while it waits: nothing waits in
    # memory, the reconciler loop of the new processes finds it in the database.
    time.sleep(2)
    workers.stop()
    assert Migration.objects.get(pk=migration_id).status == "scheduled"
    time.sleep(2)
    workers.start()  # its reconciler loop needs a few seconds to boot on a busy machine
    restarted_s = (not_before - timezone.now()).total_seconds()
    print(f"workers restarted {restarted_s:.1f} s before the migration's not_before")

    record = wait_final(migration_id, timeout=240)
    assert record.status == "succeeded", record.error
    delay = (record.started_at - record.not_before).total_seconds()
    queued_at = AuditEvent.objects.get(target_id=str(migration_id), event_type="migration.due")
    print(
        f"scheduled migration {migration_id} started {delay:.2f} s after its not_before "
        f"(queued after {(queued_at.occurred_at - record.not_before).total_seconds():.2f} s, "
        f"claimed {(record.started_at - queued_at.occurred_at).total_seconds():.2f} s later)"
    )
    assert 0 <= delay <= START_DELAY_MAX_S
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}
    assert events_of(migration_id)[:4] == [
        "migration.requested",
        "migration.scheduled",
        "migration.due",
        "migration.checking",
    ]


def test_window_closes_while_the_destination_slot_is_taken(api, linux_vm, tiny_vm, workers):
    """One incoming migration per host: a bandwidth-limited migration of the Linux
    guest holds the destination's only slot, so the tiny guest's migration waits
    (queued, waiting_for_slot) until its window closes: it fails with window_closed,
    and neither VM has moved."""
    workers.env = {"PORTAL_MIGRATION_MAX_INCOMING": "1"}
    workers.start()
    source = linux_vm.source
    tiny_source = tiny_vm.source
    destination = next(h for h in linux_vm.hosts if h.name not in (source.name, tiny_source.name))
    hog = request_migration(api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=1)
    labtools.wait_for(
        lambda: Migration.objects.filter(pk=hog, status="migrating").exists(),
        timeout=90,
        what="the slot-holding migration to run",
    )
    window_end = timezone.now() + timedelta(seconds=8)
    waiting = request_migration(
        api,
        tiny_vm.uuid,
        remote_host=destination.name,
        storage="copy",
        window_end=window_end.isoformat(),
    )
    labtools.wait_for(
        lambda: Migration.objects.filter(pk=waiting, phase="waiting_for_slot").exists(),
        timeout=10,
        what="the windowed migration to wait for a slot",
    )
    record = wait_final(waiting, timeout=30)
    late = (record.finished_at - window_end).total_seconds()
    print(f"window closed; migration {waiting} failed {late:.2f} s after its window_end")
    assert record.status == "failed"
    assert record.failure_reason == "window_closed"
    assert record.error == (
        f"the maintenance window closed at {record.window_end.isoformat()} "
        "before the migration could start"
    )
    assert record.started_at is None and record.claim_epoch == 0
    assert 0 <= late <= START_DELAY_MAX_S
    assert events_of(waiting) == ["migration.requested", "migration.failed"]
    assert labtools.where(tiny_vm.hosts, tiny_vm.uuid) == {tiny_source.name: "running"}

    assert api.post(f"/api/migrations/{hog}/cancel/").status_code == 200
    assert wait_final(hog, timeout=90).status == "cancelled"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}
