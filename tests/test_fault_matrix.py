"""The fault matrix: real faults on real lab hosts, each ending with the same checks.

A migration never loses the VM: after every fault the VM runs on exactly one host
(virsh on every host), its definition is kept there, the record is final and says
what really happened, and exactly one final audit event was written. A record may
need attention while a host cannot be reached; once the host is back, the
reconciler settles it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from rest_framework.authtoken.models import Token

from hosts import gateway
from lab import faults, machines
from migrations_app.domain.lifecycle import FINAL_STATUSES, FailureReason
from migrations_app.models import Migration
from migrations_app.worker.reconciler import migrations_reconcile
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import (
    events_of,
    request_migration,
    run_in_thread,
    wait_final,
    wait_until_migrating,
)
from tests.processes import PortalServer, Workers, free_port
from vms.selectors import vm_current_with_host

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

TERMINAL_EVENTS = {"migration.succeeded", "migration.failed", "migration.cancelled"}
# Short libvirt keepalive for these tests: a silent host is noticed in about 4 s.
KEEPALIVE = {"PORTAL_LIBVIRT_KEEPALIVE_INTERVAL_S": "1", "PORTAL_LIBVIRT_KEEPALIVE_COUNT": "3"}


@pytest.fixture(autouse=True)
def short_keepalive(monkeypatch, lab_config):
    monkeypatch.setattr(gateway.session, "KEEPALIVE_INTERVAL_S", 1)
    monkeypatch.setattr(gateway.session, "KEEPALIVE_COUNT", 3)
    yield
    # Whatever a test did, no host stays frozen and no link stays cut.
    faults.thaw_all(lab_config)
    faults.heal_all(lab_config)


def assert_settled(placement, migration_id: int, source, destination) -> Migration:
    """The invariant: one running copy, where the record says; definition kept; final."""
    record = Migration.objects.get(pk=migration_id)
    assert record.status in FINAL_STATUSES, (record.status, record.error)
    truth = labtools.where(placement.hosts, placement.uuid)
    running = [name for name, state in truth.items() if state == "running"]
    assert len(running) == 1, truth
    expected = destination.name if record.status == "succeeded" else source.name
    assert running == [expected], (record.status, record.error, truth)
    assert labtools.persistent(placement.by_name[expected], placement.uuid), truth
    terminal = [e for e in events_of(migration_id) if e in TERMINAL_EVENTS]
    assert terminal == [f"migration.{record.status}"], events_of(migration_id)
    return record


def reconcile_until_final(migration_id: int, timeout: float = 120) -> Migration:
    def settled():
        migrations_reconcile(wait_for_abort_s=30)
        return Migration.objects.filter(pk=migration_id, status__in=FINAL_STATUSES).first()

    return labtools.wait_for(settled, timeout, f"migration {migration_id} settled", interval=1)


# --- round trips -----------------------------------------------------------------------


def test_round_trip_without_delete_source_reuses_the_definition(api, linux_vm):
    a = linux_vm.source
    b = linux_vm.other(a)
    first = request_migration(api, linux_vm.uuid, remote_host=b.name)
    assert migration_execute(migration_id=first) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {a.name: "shut off", b.name: "running"}

    check = api.post(
        f"/api/vms/{linux_vm.uuid}/migrate/check/", {"remote_host": a.name}, format="json"
    ).json()
    clash = next(c for c in check["checks"] if c["name"] == "no_name_or_uuid_clash")
    assert clash["status"] == "pass" and "comes home" in clash["message"], clash

    # A failed trip home leaves the definition at home as it was.
    failing = request_migration(
        api, linux_vm.uuid, remote_host=a.name, bandwidth_mib_s=8, timeout_s=3
    )
    assert migration_execute(migration_id=failing) == "failed"
    assert Migration.objects.get(pk=failing).failure_reason == FailureReason.TIMEOUT
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {a.name: "shut off", b.name: "running"}
    assert_settled(linux_vm, failing, b, a)

    back = request_migration(api, linux_vm.uuid, remote_host=a.name)
    assert migration_execute(migration_id=back) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {a.name: "running", b.name: "shut off"}
    assert_settled(linux_vm, back, b, a)


def test_round_trip_with_delete_source(api, linux_vm):
    a = linux_vm.source
    b = linux_vm.other(a)
    there = request_migration(api, linux_vm.uuid, remote_host=b.name, delete_source=True)
    assert migration_execute(migration_id=there) == "succeeded"
    back = request_migration(api, linux_vm.uuid, remote_host=a.name, delete_source=True)
    assert migration_execute(migration_id=back) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {a.name: "running"}
    assert_settled(linux_vm, back, b, a)


def test_round_trip_over_three_hosts(api, linux_vm):
    assert len(linux_vm.hosts) >= 3, "the test lab must have 3 hosts (TEST_LAB_HOSTS)"
    a = linux_vm.source
    b, c = (h for h in linux_vm.hosts if h.name != a.name)
    for source, destination in ((a, b), (b, c), (c, a)):
        migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
        assert migration_execute(migration_id=migration_id) == "succeeded", Migration.objects.get(
            pk=migration_id
        ).error
        assert_settled(linux_vm, migration_id, source, destination)
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {
        a.name: "running",
        b.name: "shut off",
        c.name: "shut off",
    }


# --- hosts that hang or die ------------------------------------------------------------


def test_destination_libvirtd_frozen_mid_migration(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    with faults.frozen_libvirtd(destination):
        started = time.monotonic()
        worker.join(90)
        assert not worker.is_alive(), "a frozen destination must not block the worker"
        bounded_s = time.monotonic() - started
        record = Migration.objects.get(pk=migration_id)
        # The VM runs on the source; the destination could not be checked.
        assert record.status == "failed", record.error
        assert record.failure_reason == FailureReason.UNREACHABLE, record.error
        assert record.needs_cleanup
        assert labtools.domstate(source, linux_vm.uuid) == "running"
    print(f"frozen destination: the worker settled {bounded_s:.1f} s after the freeze")
    migrations_reconcile()
    assert Migration.objects.get(pk=migration_id).needs_cleanup is False
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}
    assert_settled(linux_vm, migration_id, source, destination)


def test_source_libvirtd_killed_after_the_switchover(api, linux_vm, lab_config):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
    worker = run_in_thread(migration_id)
    labtools.wait_for(
        lambda: labtools.domstate(destination, linux_vm.uuid) == "running",
        timeout=120,
        what="the switchover",
        interval=0.05,
    )
    machines.kill_libvirtd(source)
    try:
        worker.join(60)
        assert not worker.is_alive()
        during = Migration.objects.get(pk=migration_id)
        assert during.status in ("succeeded", "needs_attention"), during.error
    finally:
        machines.start_libvirtd(source, lab_config)
    record = reconcile_until_final(migration_id)
    assert record.status == "succeeded", record.error
    assert_settled(linux_vm, migration_id, source, destination)


def test_link_between_the_hosts_cut_mid_migration(api, linux_vm):
    """The migration stream stalls; the timeout still aborts it, and the VM stays."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8, timeout_s=12
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    with faults.cut_during(destination, faults.Plane.DATA):
        worker.join(90)
        assert not worker.is_alive()
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "failed", record.error
    assert record.error.startswith("timed out after 12 s"), record.error
    assert record.failure_reason == FailureReason.TIMEOUT
    assert_settled(linux_vm, migration_id, source, destination)


def test_portal_cut_off_from_the_source_mid_migration(api, linux_vm):
    """libvirt goes on without the portal; the portal touches nothing while it cannot
    see the source, and settles the truth once it can."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=64
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    with faults.cut_during(source, faults.Plane.CONTROL):
        worker.join(90)
        assert not worker.is_alive()
        record = Migration.objects.get(pk=migration_id)
        assert record.status == "needs_attention", (record.status, record.error)
        assert source.name in record.error and "cannot be reached" in record.error
        # Nothing was changed on either host: libvirt finishes the migration alone.
        labtools.wait_for(
            lambda: labtools.domstate(destination, linux_vm.uuid) == "running",
            timeout=90,
            what="libvirt to finish the migration",
        )
        migrations_reconcile()  # cannot see the source yet: stays as it is
        assert Migration.objects.get(pk=migration_id).status == "needs_attention"
    record = reconcile_until_final(migration_id)
    assert record.status == "succeeded", record.error
    events = events_of(migration_id)
    assert events.index("migration.needs_attention") < events.index("migration.succeeded")
    assert_settled(linux_vm, migration_id, source, destination)


def test_failure_after_postcopy_started_keeps_the_vm_on_the_destination(api, linux_vm, lab_config):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api,
        linux_vm.uuid,
        remote_host=destination.name,
        bandwidth_mib_s=8,
        allow_postcopy=True,
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    assert api.post(f"/api/migrations/{migration_id}/postcopy/").status_code == 200
    labtools.wait_for(
        lambda: labtools.domstate(destination, linux_vm.uuid) == "running",
        timeout=60,
        what="post-copy to resume the VM on the destination",
        interval=0.05,
    )
    machines.kill_libvirtd(source)
    try:
        worker.join(60)
        assert not worker.is_alive()
        # A cancel now must not abort anything: the destination holds the memory.
        api.post(f"/api/migrations/{migration_id}/cancel/")
    finally:
        machines.start_libvirtd(source, lab_config)
    record = reconcile_until_final(migration_id)
    assert record.status == "succeeded", record.error
    assert_settled(linux_vm, migration_id, source, destination)


# --- workers that die or stall ---------------------------------------------------------


@pytest.fixture
def workers(tmp_path):
    get_broker().purge_queue()
    started = Workers(
        tmp_path / "workers.log",
        env={
            **KEEPALIVE,
            "PORTAL_MIGRATION_STALE_AFTER_S": "5",
            "PORTAL_MIGRATION_HEARTBEAT_S": "0.5",
            "PORTAL_MIGRATION_RECONCILE_EVERY_S": "2",
        },
    )
    yield started
    if started.process and started.process.poll() is None:
        started.thaw()
    started.kill()
    print(started.log.read_text()[-5000:])


def test_worker_killed_during_prechecks(api, linux_vm, workers):
    source = linux_vm.source
    destination = linux_vm.other(source)
    workers.start()
    with faults.frozen_libvirtd(destination):  # the pre-checks wait for it
        migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
        labtools.wait_for(
            lambda: Migration.objects.filter(pk=migration_id, status="checking").exists(),
            timeout=60,
            what="the pre-checks to start",
        )
        time.sleep(0.5)
        workers.kill()
    assert Migration.objects.get(pk=migration_id).status == "checking"
    workers.start()  # reconciles at start
    record = wait_final(migration_id, timeout=60)
    assert record.status == "failed"
    assert "during the pre-checks" in record.error and "nothing was started" in record.error
    assert record.failure_reason == FailureReason.WORKER_LOST
    assert_settled(linux_vm, migration_id, source, destination)


def test_worker_killed_during_completion(api, linux_vm, workers):
    source = linux_vm.source
    destination = linux_vm.other(source)
    workers.start()
    migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
    # Completion is short now: `completing` lasts while libvirt's statistics are read;
    # the inventory sync of both hosts runs after `succeeded`. Either is a kill during
    # completion (the task has not returned yet).
    labtools.wait_for(
        lambda: Migration.objects.filter(
            pk=migration_id, status__in=["completing", "succeeded"]
        ).exists(),
        timeout=120,
        what="completion to start",
        interval=0.005,
    )
    workers.kill()
    workers.start()
    record = wait_final(migration_id, timeout=60)
    assert record.status == "succeeded", record.error
    assert_settled(linux_vm, migration_id, source, destination)
    # Whatever the kill interrupted, the inventory names the VM's new host.
    assert vm_current_with_host(uuid=linux_vm.uuid).host.name == destination.name


def test_stalled_worker_is_taken_over_and_writes_nothing_after(api, linux_vm, workers, settings):
    source = linux_vm.source
    destination = linux_vm.other(source)
    workers.start()
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    wait_until_migrating(migration_id)
    workers.freeze()
    time.sleep(6)  # past the stale limit (5 s)
    settings.MIGRATION_STALE_AFTER_S = 5
    assert migration_id in migrations_reconcile(wait_for_abort_s=30)
    settled = Migration.objects.values().get(pk=migration_id)
    assert settled["status"] in FINAL_STATUSES
    events = events_of(migration_id)
    samples = Migration.objects.get(pk=migration_id).samples.count()

    workers.thaw()
    time.sleep(8)  # the revived worker wakes up, notices, and stops
    assert Migration.objects.values().get(pk=migration_id) == settled
    assert events_of(migration_id) == events
    assert Migration.objects.get(pk=migration_id).samples.count() == samples
    assert "lost its claim" in workers.log.read_text() or "taken over" in workers.log.read_text()
    assert_settled(linux_vm, migration_id, source, destination)


# --- broker and database faults --------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test alone, on a unix socket, that can be stopped."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "redis.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        labtools.wait_for(self.socket.exists, 10, "redis to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.socket.unlink(missing_ok=True)


def test_broker_down_when_the_request_arrives(api, admin_user, linux_vm, tmp_path):
    source = linux_vm.source
    destination = linux_vm.other(source)
    redis = PrivateRedis(tmp_path)
    redis.start()
    env = {
        **KEEPALIVE,
        "REDIS_URL": redis.url,
        "PORTAL_MIGRATION_RECONCILE_EVERY_S": "2",
        "PORTAL_MIGRATION_TASK_LOST_AFTER_S": "5",
    }
    server = PortalServer(tmp_path / "web.log", free_port(), env=env)
    workers = Workers(tmp_path / "workers.log", env=env)
    server.start()
    workers.start()
    try:
        labtools.wait_for(lambda: _answers(server.url), timeout=60, what="the portal to listen")
        labtools.wait_for(
            lambda: "running." in workers.log.read_text(),
            timeout=60,
            what="the task cluster to run",
        )
        redis.stop()
        token = Token.objects.get_or_create(user=admin_user)[0].key
        request = urllib.request.Request(
            f"{server.url}/api/vms/{linux_vm.uuid}/migrate/",
            data=json.dumps({"remote_host": destination.name}).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
            migration_id = json.load(response)["id"]
        queued = Migration.objects.get(pk=migration_id)
        assert (queued.status, queued.enqueued_at) == ("queued", None)
        time.sleep(3)
        assert Migration.objects.get(pk=migration_id).status == "queued"
        redis.start()
        # The reconciler (every 2 s here) enqueues it again once the broker is back.
        record = wait_final(migration_id, timeout=120)
        assert Migration.objects.get(pk=migration_id).enqueued_at is not None
    finally:
        workers.kill()
        server.kill()
        redis.stop()
        print(workers.log.read_text()[-3000:])
    assert record.status == "succeeded", record.error
    assert_settled(linux_vm, migration_id, source, destination)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/login/", timeout=2)
        return True
    except OSError:
        return False


def test_database_connection_lost_while_sampling(api, linux_vm):
    """PostgreSQL: the worker's connections are terminated by the server. SQLite:
    another process holds the write lock longer than the busy timeout. Either way a
    sample is lost, not the migration."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            worker_started = cursor.fetchone()[0]
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    fault_at = timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Only the worker's connections (opened since it started): this process
            # keeps others too (e.g. the browser tests' contexts), which must survive.
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_start >= %s",
                [worker_started],
            )
            assert cursor.fetchone()[0] >= 1
    else:
        holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        time.sleep(25)  # longer than the 20 s busy timeout
        holder.execute("ROLLBACK")
        holder.close()
    assert worker.is_alive(), "a database fault must not end the task"
    labtools.wait_for(
        lambda: Migration.objects.get(pk=migration_id)
        .samples.filter(taken_at__gt=fault_at)
        .exists(),
        timeout=30,
        what="sampling to resume",
    )
    # Let it finish quickly now.
    labtools.lift_bandwidth_limit(api, migration_id)
    worker.join(120)
    assert not worker.is_alive()
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "succeeded", record.error
    assert_settled(linux_vm, migration_id, source, destination)
