"""Migrations through real django-q2 worker processes: queued execution, and a worker
killed mid-migration whose record the restarted workers settle from libvirt."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from migrations_app.models import Migration
from tests import labtools
from tests.labtools import request_migration, wait_final

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def test_migration_runs_on_a_worker(api, linux_vm, workers):
    workers.start()
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, delete_source=True
    )
    record = wait_final(migration_id)
    assert record.status == "succeeded", record.error
    assert record.claimed_by.split(":")[0]  # host:pid of the worker process
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}


def test_worker_killed_mid_migration_is_settled_on_restart(api, linux_vm, workers):
    workers.start()
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    labtools.wait_for(
        lambda: Migration.objects.filter(
            pk=migration_id, status="migrating", percent__gte=3
        ).exists(),
        timeout=90,
        what="the worker to be migrating",
    )
    workers.kill()  # SIGKILL the whole worker process group
    stuck = Migration.objects.get(pk=migration_id)
    assert stuck.status == "migrating"

    workers.start()  # run_workers reconciles at start
    record = wait_final(migration_id, timeout=120)
    truth = labtools.where(linux_vm.hosts, linux_vm.uuid)
    running = [name for name, state in truth.items() if state == "running"]
    assert len(running) == 1, truth  # never lost, never duplicated
    if record.status == "succeeded":
        assert running == [destination.name]
    else:
        assert record.status == "failed"
        assert "stopped" in record.error
        assert running == [source.name]
        assert destination.name not in truth, truth
    events = list(
        AuditEvent.objects.filter(
            target_type="migrations_app.migration", target_id=str(migration_id)
        )
        .order_by("occurred_at", "id")
        .values_list("event_type", flat=True)
    )
    assert events[-1] in ("migration.failed", "migration.succeeded")
