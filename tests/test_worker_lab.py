"""Migrations through real django-q2 worker processes: queued execution, and a worker
killed mid-migration whose record the restarted workers settle from libvirt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_q.brokers import get_broker

from audit.models import AuditEvent
from migrations_app.models import Migration
from tests import labtools
from tests.labtools import request_migration

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent


def _test_database_url() -> str:
    """The URL of the database this test session uses, for the worker processes."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Workers:
    """`manage.py run_workers` in its own process group, like the demo runs it."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PORTAL_Q_WORKERS": "2",
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "run_workers"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def workers(tmp_path):
    # Tasks enqueued by earlier tests (whose migrations were run in-process) must not
    # reach these workers.
    get_broker().purge_queue()
    started = Workers(tmp_path / "workers.log")
    yield started
    started.kill()
    print(started.log.read_text()[-5000:])


def wait_final(migration_id: int, timeout: float = 180) -> Migration:
    return labtools.wait_for(
        lambda: Migration.objects.filter(
            pk=migration_id, status__in=["succeeded", "failed", "cancelled"]
        ).first(),
        timeout=timeout,
        what=f"migration {migration_id} to finish",
        interval=0.5,
    )


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
