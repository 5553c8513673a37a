"""Why a migration failed: the engine records `failure_reason` from what it knows (the
pre-checks, its own abort, the reconciler's takeover, a host that does not answer),
never from the error text; the API shows and filters it; migration 0005 classified the
older rows once. The hosts are faked at the gateway: no hypervisor, no network."""

from __future__ import annotations

import importlib
import threading
import uuid
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from django.apps import apps
from django.utils import timezone

from hosts import gateway
from hosts.models import Host
from migrations_app import engine
from migrations_app.checks import FAIL, PASS, CheckResult
from migrations_app.engine import migration_execute, migrations_reconcile
from migrations_app.lifecycle import FailureReason, MigrationStatus, Phase
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db(transaction=True)

R = FailureReason
ABORTED = "operation aborted: migration out job: canceled by client"


class FakeHosts:
    """Stands in for `gateway.connect`: each host (by the address in its URI) answers
    what the test set: reachable or not, the VM's state, and what migrating does."""

    def __init__(self) -> None:
        self.reachable = {"192.0.2.40": True, "192.0.2.41": True}
        self.state = {"192.0.2.40": "running", "192.0.2.41": None}
        self.aborted = threading.Event()
        self.on_migrate = lambda: None  # the source's migrateToURI3

    @contextmanager
    def connect(self, uri: str, *args, **kwargs):
        address = urlsplit(uri).hostname
        if not self.reachable[address]:
            raise gateway.HostUnreachable(f"{address}:16509 did not answer within 5 s")
        yield FakeConnection(self, address)


class FakeConnection:
    def __init__(self, hosts: FakeHosts, address: str) -> None:
        self.hosts, self.address = hosts, address

    def find_domain(self, *, uuid=None, name=None):
        state = self.hosts.state[self.address]
        return SimpleNamespace(state=state) if state else None

    def job_stats(self, uuid: str) -> dict:
        return {}

    def completed_job_stats(self, uuid: str) -> dict:
        return {}

    def abort_job(self, uuid: str) -> None:
        self.hosts.aborted.set()

    def set_max_downtime(self, uuid: str, milliseconds: int) -> None:
        pass

    def migrate(self, uuid: str, **kwargs) -> None:
        self.hosts.on_migrate()

    def _set(self, state):
        self.hosts.state[self.address] = state

    def destroy(self, uuid):
        self._set("shut_off")

    def undefine(self, uuid):
        self._set(None)

    def resume(self, uuid):
        self._set("running")

    def start(self, uuid):
        self._set("running")


@pytest.fixture
def hosts(monkeypatch) -> FakeHosts:
    fake = FakeHosts()
    monkeypatch.setattr(gateway, "connect", fake.connect)
    monkeypatch.setattr(engine, "host_refresh", lambda **kwargs: None)  # no inventory sync
    return fake


@pytest.fixture
def checks(monkeypatch) -> list[CheckResult]:
    """What the pre-checks answer (they pass unless a test adds a failing one)."""
    results = [CheckResult("source_reachable", PASS, "answers", {"source_state": "running"})]
    monkeypatch.setattr(engine, "run_prechecks", lambda plan: results)
    return results


def _migration(**fields) -> Migration:
    source, _ = Host.objects.get_or_create(name="src", address="192.0.2.40")
    destination, _ = Host.objects.get_or_create(name="dst", address="192.0.2.41")
    values = {"vm_name": "web-1", "requested_by_name": "admin", "timeout_s": 600, **fields}
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(), source=source, destination=destination, max_downtime_ms=500, **values
    )


def _run(migration: Migration) -> Migration:
    migration_execute(migration_id=migration.pk, worker="test:1")
    return Migration.objects.get(pk=migration.pk)


def _aborted_then(hosts: FakeHosts, then=lambda: None):
    """A migrateToURI3 that runs until the portal aborts it, then reports the abort."""

    def migrate() -> None:
        assert hosts.aborted.wait(10), "the portal never aborted the job"
        then()
        raise gateway.GatewayError(ABORTED)

    return migrate


def test_a_refused_pre_check_is_precheck(hosts, checks):
    checks.append(CheckResult("enough_memory", FAIL, "dst has 1.0 GiB free"))
    record = _run(_migration())
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, R.PRECHECK)
    assert record.phase == Phase.CHECKS_FAILED


@pytest.mark.parametrize(
    "error,reason",
    [
        (gateway.GatewayError("internal error: qemu unexpectedly closed the monitor"), R.LIBVIRT),
        # libvirt could not reach a host: the gateway says so by the exception's type.
        (
            gateway.HostUnreachable("unable to connect to server at '192.0.2.41:16509'"),
            R.UNREACHABLE,
        ),
        (RuntimeError("a bug"), R.INTERNAL),
    ],
)
def test_what_libvirt_reported_decides_the_reason(hosts, checks, error, reason):
    def migrate():
        raise error

    hosts.on_migrate = migrate
    record = _run(_migration())
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, reason)
    assert hosts.state == {"192.0.2.40": "running", "192.0.2.41": None}  # on the source


def test_libvirt_error_while_the_destination_is_gone_is_unreachable(hosts, checks):
    def migrate():
        hosts.reachable["192.0.2.41"] = False
        raise gateway.GatewayError("operation failed: migration out job: unexpectedly failed")

    hosts.on_migrate = migrate
    record = _run(_migration())
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, R.UNREACHABLE)
    assert record.needs_cleanup


def test_an_abort_for_the_timeout_is_timeout(hosts, checks):
    hosts.on_migrate = _aborted_then(hosts)
    record = _run(_migration(timeout_s=1))
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, R.TIMEOUT)
    assert record.error.startswith(f"timed out after 1 s: {ABORTED}")


def test_a_cancel_asked_for_after_the_timeout_abort_changes_nothing(hosts, checks):
    migration = _migration(timeout_s=1)

    def cancel() -> None:
        Migration.objects.filter(pk=migration.pk).update(cancel_requested_at=timezone.now())

    hosts.on_migrate = _aborted_then(hosts, then=cancel)
    record = _run(migration)
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, R.TIMEOUT)


def test_a_cancel_is_no_failure(hosts, checks):
    migration = _migration()

    def migrate() -> None:
        Migration.objects.filter(pk=migration.pk).update(cancel_requested_at=timezone.now())
        _aborted_then(hosts)()

    hosts.on_migrate = migrate
    record = _run(migration)
    assert (record.status, record.failure_reason) == (MigrationStatus.CANCELLED, "")
    assert record.error.startswith("cancelled on request")


def _stale(status: str) -> Migration:
    long_ago = timezone.now() - timedelta(hours=1)
    return _migration(
        status=status,
        claimed_by="elsewhere:1",
        claim_epoch=1,
        started_at=long_ago,
        heartbeat_at=long_ago,
    )


@pytest.mark.parametrize("status", [MigrationStatus.CHECKING, MigrationStatus.MIGRATING])
def test_a_dead_worker_taken_over_is_worker_lost(hosts, status):
    migration = _stale(status)
    assert migrations_reconcile(wait_for_abort_s=1) == [migration.pk]
    record = Migration.objects.get(pk=migration.pk)
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, R.WORKER_LOST)


def test_needing_attention_keeps_the_reason_until_the_reconciler_settles(hosts, checks):
    def source_gone() -> None:
        hosts.reachable["192.0.2.40"] = False

    hosts.on_migrate = _aborted_then(hosts, then=source_gone)
    migration = _run(_migration(timeout_s=1))
    # Where the VM runs is unknown: nothing is decided, but why it broke is kept.
    assert (migration.status, migration.failure_reason) == (
        MigrationStatus.NEEDS_ATTENTION,
        R.TIMEOUT,
    )
    hosts.reachable["192.0.2.40"] = True
    assert migrations_reconcile() == [migration.pk]
    record = Migration.objects.get(pk=migration.pk)
    assert (record.status, record.failure_reason) == (MigrationStatus.FAILED, R.TIMEOUT)


def test_a_migration_that_succeeds_after_all_has_no_reason(hosts, checks):
    def switched_over_then_lost() -> None:
        hosts.state.update({"192.0.2.40": None, "192.0.2.41": "running"})
        hosts.reachable["192.0.2.41"] = False
        raise gateway.GatewayError("operation failed: migration out job: unexpectedly failed")

    hosts.on_migrate = switched_over_then_lost
    migration = _run(_migration())
    assert (migration.status, migration.failure_reason) == (
        MigrationStatus.NEEDS_ATTENTION,
        R.UNREACHABLE,
    )
    hosts.reachable["192.0.2.41"] = True
    migrations_reconcile()
    record = Migration.objects.get(pk=migration.pk)
    assert (record.status, record.failure_reason) == (MigrationStatus.SUCCEEDED, "")


# --- the API ---------------------------------------------------------------------------


def test_the_api_shows_and_filters_the_reason(api):
    timed_out = _migration(status=MigrationStatus.FAILED, failure_reason=R.TIMEOUT)
    _migration(status=MigrationStatus.FAILED, failure_reason=R.PRECHECK)
    _migration(status=MigrationStatus.SUCCEEDED)
    body = api.get(f"/api/migrations/{timed_out.pk}/").json()
    assert body["failure_reason"] == "timeout"
    listed = api.get("/api/migrations/", {"failure_reason": "timeout"}).json()
    assert [m["id"] for m in listed["results"]] == [timed_out.pk]
    both = api.get("/api/migrations/?failure_reason=timeout&failure_reason=precheck").json()
    assert both["count"] == 2
    assert api.get("/api/migrations/", {"failure_reason": "bad luck"}).status_code == 400


def test_the_openapi_schema_lists_the_reasons(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    enums = [
        component["enum"]
        for component in schema["components"]["schemas"].values()
        if "enum" in component
    ]
    assert [r.value for r in FailureReason] in enums
    parameters = schema["paths"]["/api/migrations/"]["get"]["parameters"]
    reason = next(p for p in parameters if p["name"] == "failure_reason")
    assert reason["schema"]["items"]["enum"] == sorted(FailureReason.values)


# --- migration 0005: the rows recorded before the field ----------------------------------


def test_migration_0005_classifies_the_older_rows_once():
    classify = importlib.import_module(
        "migrations_app.migrations.0005_classify_failure_reasons"
    ).classify
    rows = {
        "Pre-checks failed: destination_reachable: cannot connect to 192.0.2.41:16509": (
            "failed",
            R.PRECHECK,
        ),
        "timed out after 600 s: operation aborted": ("failed", R.TIMEOUT),
        "the worker running this migration (w:1) stopped; settled by the reconciler": (
            "failed",
            R.WORKER_LOST,
        ),
        "cannot open qemu+tcp://192.0.2.41/system: handshake": ("failed", R.UNREACHABLE),
        "192.0.2.41:16509 did not answer within 5 s (nothing was changed)": (
            "needs_attention",
            R.UNREACHABLE,
        ),
        "internal error: qemu unexpectedly closed the monitor": ("failed", R.LIBVIRT),
        "Cancelled by ann before it started.": ("cancelled", ""),
        "": ("succeeded", ""),
    }
    for error, (status, _) in rows.items():
        _migration(status=status, error=error)
    # A reason the engine already recorded is left alone.
    recorded = "unexpected error: a bug"
    _migration(status="failed", error=recorded, failure_reason=R.INTERNAL)
    rows[recorded] = ("failed", R.INTERNAL)

    classify(apps, None)
    assert dict(Migration.objects.values_list("error", "failure_reason")) == {
        error: reason for error, (_, reason) in rows.items()
    }
