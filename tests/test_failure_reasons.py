"""Why a migration failed: the engine records `failure_reason` from what it knows (the
pre-checks, its own abort, the reconciler's takeover, a host that does not answer),
never from the error text; the API shows and filters it; migration 0005 classified the
older rows once. Which reason each fault gives is asserted on real lab hosts in
tests/test_fault_matrix.py; the precedence rule is table-tested in test_decisions.py."""

from __future__ import annotations

import importlib
import uuid

import pytest
from django.apps import apps

from hosts.models import Host
from migrations_app.domain.lifecycle import FailureReason, MigrationStatus
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db(transaction=True)

R = FailureReason


def _migration(**fields) -> Migration:
    source, _ = Host.objects.get_or_create(name="src", address="192.0.2.40")
    destination, _ = Host.objects.get_or_create(name="dst", address="192.0.2.41")
    values = {"vm_name": "web-1", "requested_by_name": "admin", "timeout_s": 600, **fields}
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(), source=source, destination=destination, max_downtime_ms=500, **values
    )


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
    assert len(both["results"]) == 2
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
