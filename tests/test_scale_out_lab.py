"""The portal scaled out (issue #12): two web tiers (two gunicorn masters with their
uvicorn workers, on two ports) and two worker groups (two `manage.py run_workers`, each
its own process group) share one PostgreSQL database and one Redis, against the three
lab hosts. Through real HTTP, spread over both web tiers:

1. 8 migrations at once (small extra guests, per-host limits raised): all succeed, and
   libvirt shows every VM running on its destination only;
2. 50 simultaneous migrate requests for one VM: exactly one 202, 49 x 409, one row;
3. the worker group running that migration is SIGKILLed mid-migration: the other group
   settles it (its reconciler takes it over), truthfully, and the VM runs on exactly one
   host, the one the record names.

PostgreSQL + Redis only (the `scale_out` marker; `make test-scale-out`): on SQLite the
test fails loudly instead of skipping."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from django.conf import settings
from django.db import connection
from django_q.brokers import get_broker
from rest_framework.authtoken.models import Token

from audit.models import AuditEvent
from hosts.models import Host
from lab import layout, lifecycle, machines
from migrations_app.domain.lifecycle import FailureReason
from migrations_app.models import Migration
from tests import labtools
from tests.labtools import wait_final
from tests.processes import PortalServer, Workers, free_port

pytestmark = [pytest.mark.lab, pytest.mark.scale_out, pytest.mark.django_db(transaction=True)]

EXTRA_PER_HOST = 3  # 9 small guests on 3 hosts, 8 of them move
AT_ONCE = 8
RACERS = 50
STALE_AFTER_S = 6
# Both tiers and both groups see the same limits: 8 migrations fit on 3 hosts.
PROCESS_ENV = {
    "PORTAL_MIGRATION_MAX_OUTGOING": "4",
    "PORTAL_MIGRATION_MAX_INCOMING": "4",
    "PORTAL_MIGRATION_STALE_AFTER_S": str(STALE_AFTER_S),
    "PORTAL_MIGRATION_HEARTBEAT_S": "0.5",
    "PORTAL_MIGRATION_RECONCILE_EVERY_S": "2",
}
WORKERS_PER_GROUP = 4  # 2 groups x 4 = one worker process for each of the 8


def _require_postgresql_and_redis() -> None:
    if connection.vendor != "postgresql":
        pytest.fail(
            f"SCALE-OUT TEST NEEDS POSTGRESQL, the database here is {connection.vendor}: "
            "two web tiers and two worker groups share one database, which SQLite cannot "
            "serve. Run it with `make test-scale-out` (DATABASE_URL=postgres://..., "
            "REDIS_URL=redis://...).",
            pytrace=False,
        )
    if settings.NO_REDIS or not settings.REDIS_URL.startswith("redis://"):
        pytest.fail(
            f"SCALE-OUT TEST NEEDS A SHARED REDIS (REDIS_URL=redis://...), not "
            f"{'none' if settings.NO_REDIS else settings.REDIS_URL}.",
            pytrace=False,
        )


@pytest.fixture
def extra_guests(lab_hosts, lab_config):
    """EXTRA_PER_HOST small diskless guests on every lab host, removed afterwards so the
    lab is as the other tests expect it."""
    if len(lab_hosts) < 3:
        pytest.fail(
            f"SCALE-OUT TEST NEEDS THREE LAB HOSTS, the lab has {len(lab_hosts)} (TEST_LAB_HOSTS).",
            pytrace=False,
        )
    config = dataclasses.replace(lab_config, extra_vms=EXTRA_PER_HOST)
    began = time.monotonic()
    labtools.remove_extra_guests(config)
    hosts = lifecycle.up(config, hosts=len(lab_hosts))
    took = time.monotonic() - began
    print(f"scale-out: {EXTRA_PER_HOST * len(hosts)} extra guests up in {took:.1f} s")
    try:
        yield hosts
    finally:
        labtools.remove_extra_guests(config)


class ScaledOut:
    """Two web tiers and two worker groups on the test database + Redis."""

    def __init__(self, folder) -> None:
        self.webs = [
            PortalServer(folder / f"web-{n}.log", free_port(), env=PROCESS_ENV) for n in (1, 2)
        ]
        self.groups = [
            Workers(
                folder / f"workers-{n}.log",
                env={**PROCESS_ENV, "PORTAL_Q_WORKERS": str(WORKERS_PER_GROUP)},
            )
            for n in (1, 2)
        ]
        self.all = [*self.webs, *self.groups]
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        for process in self.all:
            process.start()

    def wait_ready(self) -> None:
        for web in self.webs:
            web.wait_until_serving(timeout=90)
        for group in self.groups:
            labtools.wait_for(
                lambda group=group: "running." in group.log.read_text(),
                timeout=90,
                what=f"the task cluster of {group.log.name} to run",
            )
        took = time.monotonic() - self.started_at
        print(f"scale-out: 2 web tiers and 2 worker groups ready {took:.1f} s after start")


@pytest.fixture
def scaled_out(request, tmp_path):
    """The processes, started at once so that they boot while the lab is prepared (the
    test waits for them), killed at the end; their logs are printed if the test
    failed."""
    _require_postgresql_and_redis()
    failed_before = request.session.testsfailed
    get_broker().purge_queue()  # tasks of earlier in-process tests must not run here
    processes = ScaledOut(tmp_path)
    try:
        processes.start()
        yield processes
    finally:
        for process in processes.all:
            process.kill()
        get_broker().purge_queue()
        if request.session.testsfailed != failed_before:
            for process in processes.all:
                print(f"--- {process.log.name} ---\n{process.log.read_text()[-3000:]}")


class Api:
    """Real HTTP to the web tiers, with the admin's token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def call(self, url: str, payload: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            url,
            data=None if payload is None else json.dumps(payload).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
            method="GET" if payload is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def _all_at_once(calls: list) -> list:
    """Run the calls in threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int, call) -> None:
        barrier.wait(30)
        try:
            results[index] = call()
        except Exception as exc:  # reported in the assertion, never swallowed
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def _max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of [start, end] spans that cover one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


def _group_of(claimed_by: str, groups: list[Workers]) -> Workers:
    """The worker group (process group) of the process named `host:pid`."""
    pid = int(claimed_by.rpartition(":")[2])
    pgid = os.getpgid(pid)
    return next(g for g in groups if g.process.pid == pgid)


def test_two_web_tiers_and_two_worker_groups(scaled_out, admin_user, linux_vm, extra_guests, api):
    webs, groups = scaled_out.webs, scaled_out.groups
    hosts = extra_guests
    by_name = {h.name: h for h in hosts}
    for host in Host.objects.all():
        assert api.post(f"/api/hosts/{host.pk}/refresh/").status_code == 200
    http = Api(Token.objects.get(user=admin_user).key)
    scaled_out.wait_ready()
    began = time.monotonic()

    # 1. Eight migrations at once: the k-th extra guest of every host moves to the next
    #    host; the requests alternate between the two web tiers.
    moves = []
    for k in range(1, EXTRA_PER_HOST + 1):
        for i, host in enumerate(hosts):
            if len(moves) == AT_ONCE:
                break
            destination = hosts[(i + 1) % len(hosts)]
            uuid = machines.virsh(host, "domuuid", layout.extra_vm_name(host, k)).stdout.strip()
            moves.append((uuid, destination.name))
    answers = _all_at_once(
        [
            lambda n=n, uuid=uuid, to=to: http.call(
                f"{webs[n % 2].url}/api/vms/{uuid}/migrate/",
                {"remote_host": to, "delete_source": True},
            )
            for n, (uuid, to) in enumerate(moves)
        ]
    )
    assert [a[0] if isinstance(a, tuple) else a for a in answers] == [202] * AT_ONCE, answers
    ids = [body["id"] for _, body in answers]
    for migration_id, (uuid, to) in zip(ids, moves, strict=True):
        record = wait_final(migration_id, timeout=120)
        assert record.status == "succeeded", (migration_id, record.error)
        # Ground truth: libvirt on every host, not the record.
        assert labtools.where(hosts, uuid) == {to: "running"}, (uuid, to)
    records = list(Migration.objects.filter(pk__in=ids))
    overlap = _max_overlap([(r.started_at, r.finished_at) for r in records])
    ran_in = {_group_of(r.claimed_by, groups).log.name for r in records}
    print(
        f"scale-out: {AT_ONCE} migrations in {time.monotonic() - began:.1f} s, "
        f"at most {overlap} at once, run by {sorted(ran_in)}"
    )
    assert overlap >= AT_ONCE // 2, [(r.pk, r.started_at, r.finished_at) for r in records]
    assert len(ran_in) == 2, "one worker group ran all of them"

    # 2. Fifty simultaneous requests for one VM, half through each web tier: exactly one
    #    is accepted. The winner moves slowly (8 MiB/s of a filled guest) for step 3.
    source = linux_vm.source
    destination = linux_vm.other(source)
    raced = time.monotonic()
    answers = _all_at_once(
        [
            lambda n=n: http.call(
                f"{webs[n % 2].url}/api/vms/{linux_vm.uuid}/migrate/",
                {"remote_host": destination.name, "bandwidth_mib_s": 8},
            )
            for n in range(RACERS)
        ]
    )
    race_s = time.monotonic() - raced
    codes = [a[0] if isinstance(a, tuple) else a for a in answers]
    assert sorted(codes, key=str) == [202] + [409] * (RACERS - 1), answers
    accepted = next(body for code, body in answers if code == 202)
    for code, body in answers:
        if code == 409:
            assert "already being migrated" in body["detail"], body
            assert f"migration {accepted['id']} is" in body["detail"], body
    assert Migration.objects.filter(vm_uuid=linux_vm.uuid).count() == 1
    migration_id = accepted["id"]
    print(f"scale-out: {RACERS} simultaneous requests answered in {race_s:.2f} s")

    # 3. SIGKILL the worker group that runs it, mid-migration: the other one settles it.
    running = labtools.wait_until_migrating(migration_id)
    doomed = _group_of(running.claimed_by, groups)
    survivor = next(g for g in groups if g is not doomed)
    killed_at = time.monotonic()
    doomed.kill()
    record = wait_final(migration_id, timeout=60)
    settle_s = time.monotonic() - killed_at
    print(f"scale-out: killed {doomed.log.name}; settled {record.status} in {settle_s:.1f} s")
    truth = labtools.where(linux_vm.hosts, linux_vm.uuid)
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [
        destination.name if record.status == "succeeded" else source.name
    ], (record.status, truth)
    assert record.status in ("succeeded", "failed"), (record.status, record.error)
    if record.status == "failed":
        assert record.failure_reason == FailureReason.WORKER_LOST, record.failure_reason
        assert "stopped" in record.error, record.error
        assert destination.name not in truth, truth  # no leftover on the destination
    assert labtools.persistent(by_name[labtools.running_on(hosts, linux_vm.uuid)[0]], linux_vm.uuid)
    # Taken over by the survivor's reconciler, which is alive and in the other group.
    assert record.claimed_by.startswith("reconciler "), record.claimed_by
    assert _group_of(record.claimed_by, groups) is survivor
    final_events = AuditEvent.objects.filter(
        target_type="migrations_app.migration",
        target_id=str(migration_id),
        event_type__in=("migration.succeeded", "migration.failed"),
    )
    assert final_events.count() == 1
    # Both web tiers tell the same story.
    for web in webs:
        code, body = http.call(f"{web.url}/api/migrations/{migration_id}/")
        assert (code, body["status"]) == (200, record.status), body
    print(f"scale-out: the three steps took {time.monotonic() - began:.1f} s")
