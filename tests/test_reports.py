"""Migration reports: every figure checked against the same figure computed here, in
plain Python, from the raw rows (statistics.quantiles for the percentiles)."""

import io
import random
import statistics
import uuid
from collections import Counter, defaultdict
from datetime import UTC, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit.events import EventType
from audit.models import AuditEvent
from bench import seed_history
from hosts.models import Host
from migrations_app.domain.lifecycle import FailureReason, MigrationStatus
from migrations_app.models import Migration
from migrations_app.reports import DOWNTIME_EDGES_MS, DURATION_EDGES_MS, migration_report_build
from migrations_app.selectors import migrations_for_report

pytestmark = pytest.mark.django_db

END = timezone.now().replace(microsecond=0)
START = END - timedelta(days=20)
# A failure of every reason, with an error text like the engine's.
R = FailureReason
ERRORS = {
    R.PRECHECK: "Pre-checks failed: enough_memory: dst has 1.0 GiB free, the VM needs 4.0 GiB",
    R.TIMEOUT: "timed out after 600 s: operation aborted: migration out job: canceled",
    R.WORKER_LOST: "the worker running this migration (w:1) stopped; settled by the reconciler",
    R.UNREACHABLE: "cannot open qemu+tcp://10.0.0.9/system: unable to connect to server",
    R.LIBVIRT: "internal error: qemu unexpectedly closed the monitor",
    R.INTERNAL: "unexpected error: division by zero",
    R.WINDOW_CLOSED: "the maintenance window closed at 2026-11-23T22:00:00+00:00 before the "
    "migration could start",
    R.STOPPED_OUTSIDE: "libvirt: operation failed: domain is not running (the VM was turned off "
    "on h-a by a person or a tool during the migration (libvirt: destroyed): it stays off)",
    R.GUEST_SHUTDOWN: "operation failed: domain is not running (the VM was turned off on h-a "
    "by its guest during the migration (libvirt: shutdown): it stays off)",
    R.NOT_CONVERGING: "aborted by the policy abort_when_stalled: not converging: the guest "
    "changes 8 MiB/s, the link moves 3 MiB/s: operation aborted: migration out job: canceled",
}


def _params(**values) -> QueryDict:
    query = QueryDict(mutable=True)
    for key, value in values.items():
        if isinstance(value, list):
            query.setlist(key, value)
        else:
            query[key] = value
    return query


def _make_history(n: int, seed: int, *, start=START, end=END) -> list[Migration]:
    rng = random.Random(seed)
    hosts = list(Host.objects.order_by("name")) or [
        Host.objects.create(name=f"h-{c}", address=f"192.0.2.{i + 1}") for i, c in enumerate("abcd")
    ]
    vms = [(uuid.UUID(int=rng.getrandbits(128)), f"vm-{i}") for i in range(30)]
    active_vms = set(Migration.objects.filter(status="queued").values_list("vm_uuid", flat=True))
    rows = []
    for i in range(n):
        source, destination = rng.sample(hosts, 2)
        vm_uuid, vm_name = rng.choice(vms)
        status = rng.choices(["succeeded", "failed", "cancelled", "queued"], [80, 12, 6, 2])[0]
        if status == "queued" and vm_uuid in active_vms:
            status = "cancelled"
        if status == "queued":
            active_vms.add(vm_uuid)
        live = rng.random() < 0.8
        migration = Migration(
            vm_uuid=vm_uuid,
            vm_name=vm_name,
            source=source,
            destination=destination,
            requested_by_name=rng.choice(["ann", "ben", "cat"]),
            status=status,
            live=live,
            max_downtime_ms=500,
            timeout_s=600,
        )
        if status == "succeeded":
            # Rounded values: ties on purpose, and a few rows without statistics.
            if rng.random() < 0.95:
                migration.total_time_ms = rng.randrange(100, 400_000, 50)
                migration.setup_time_ms = rng.randrange(5, 200)
                migration.transferred_bytes = rng.randrange(0, 8 << 30)
                migration.downtime_ms = rng.randrange(1, 2_500, 3) if live else None
                migration.completed_stats = {
                    "time_elapsed": migration.total_time_ms,
                    "downtime": migration.downtime_ms,
                    "data_processed": migration.transferred_bytes,
                    "memory_iteration": rng.randrange(1, 9),
                    "success": True,
                    "not_a_libvirt_key": "kept in the raw column",
                }
        elif status == "failed":
            migration.failure_reason = rng.choice(list(ERRORS))
            migration.error = ERRORS[migration.failure_reason] + f" (#{i})"
        elif status == "cancelled":
            migration.error = "Cancelled by ann before it started."
        rows.append(migration)
    Migration.objects.bulk_create(rows)
    span = (end - start).total_seconds()
    for migration in rows:  # created_at is auto_now_add: set the history afterwards
        migration.created_at = start + timedelta(seconds=int(rng.random() * span))
    Migration.objects.bulk_update(rows, ["created_at"])
    return rows


@pytest.fixture
def history():
    return _make_history(400, seed=11)


# --- the reference: plain Python over the raw rows ----------------------------------------


def _spread(values: list[int]) -> dict:
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    p95 = (
        statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    )
    return {
        "count": len(values),
        "mean": statistics.fmean(values),
        "p50": float(statistics.median(values)),
        "p95": float(p95),
        "max": max(values),
    }


def _histogram(values: list[int], edges: list[int]) -> list[int]:
    counts = [0] * len(edges)
    for v in values:
        counts[max(i for i, lower in enumerate(edges) if v >= lower)] += 1
    return counts


def _reference(rows: list[dict]) -> dict:
    outcomes = Counter(r["status"] for r in rows)
    ok = [r for r in rows if r["status"] == "succeeded"]
    durations = [r["total_time_ms"] for r in ok if r["total_time_ms"] is not None]
    downtimes = [r["downtime_ms"] for r in ok if r["downtime_ms"] is not None]
    decided = outcomes["succeeded"] + outcomes["failed"]
    hosts = defaultdict(lambda: {"out": 0, "in": 0, "failed_out": 0, "failed_in": 0})
    days = defaultdict(Counter)
    for r in rows:
        hosts[r["source__name"]]["out"] += 1
        hosts[r["destination__name"]]["in"] += 1
        if r["status"] == "failed":
            hosts[r["source__name"]]["failed_out"] += 1
            hosts[r["destination__name"]]["failed_in"] += 1
        day = r["created_at"].astimezone(UTC).date().isoformat()
        days[day]["total"] += 1
        days[day][r["status"]] += 1
    return {
        "count": len(rows),
        "outcomes": {
            "succeeded": outcomes["succeeded"],
            "failed": outcomes["failed"],
            "cancelled": outcomes["cancelled"],
            "active": sum(outcomes[s] for s in ("queued", "checking", "migrating", "completing")),
        },
        "live": sum(1 for r in rows if r["live"]),
        "success_rate": outcomes["succeeded"] / decided if decided else None,
        "failures": Counter(r["failure_reason"] for r in rows if r["status"] == "failed"),
        "duration": _spread(durations),
        "downtime": _spread(downtimes),
        "transferred": sum(r["transferred_bytes"] or 0 for r in rows),
        "per_host": {
            name: {**h, "failed": h["failed_out"] + h["failed_in"]} for name, h in hosts.items()
        },
        "per_day": {
            day: {k: c[k] for k in ("total", "succeeded", "failed", "cancelled")}
            for day, c in days.items()
        },
        "duration_hist": _histogram(durations, DURATION_EDGES_MS),
        "downtime_hist": _histogram(downtimes, DOWNTIME_EDGES_MS),
    }


FIELDS = [
    "status",
    "live",
    "error",
    "failure_reason",
    "created_at",
    "total_time_ms",
    "downtime_ms",
    "transferred_bytes",
    "source__name",
    "destination__name",
    "vm_uuid",
    "vm_name",
    "requested_by_name",
]


def _raw_rows(keep=lambda r: True, *, since=START, until=END + timedelta(seconds=1)) -> list[dict]:
    rows = Migration.objects.values(*FIELDS)
    return [r for r in rows if since <= r["created_at"] < until and keep(r)]


def _spread_matches(got: dict, want: dict) -> None:
    assert got["count"] == want["count"]
    assert got["max"] == want["max"]
    for key in ("mean", "p50", "p95"):
        if want[key] is None:
            assert got[key] is None
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-9), key


def _assert_report_matches(report: dict, rows: list[dict]) -> None:
    want = _reference(rows)
    assert report["count"] == want["count"]
    assert report["outcomes"] == want["outcomes"]
    assert report["live"] == want["live"]
    assert report["offline"] == want["count"] - want["live"]
    if want["success_rate"] is None:
        assert report["success_rate"] is None
    else:
        assert report["success_rate"] == pytest.approx(want["success_rate"])
    assert {r["reason"]: r["count"] for r in report["failures_by_reason"]} == want["failures"]
    _spread_matches(report["duration_ms"], want["duration"])
    _spread_matches(report["downtime_ms"], want["downtime"])
    assert report["transferred_bytes"] == want["transferred"]
    assert {r["host"]: {k: v for k, v in r.items() if k != "host"} for r in report["per_host"]} == (
        want["per_host"]
    )
    assert {r["day"]: {k: v for k, v in r.items() if k != "day"} for r in report["per_day"]} == (
        want["per_day"]
    )
    assert [d["day"] for d in report["per_day"]] == sorted(want["per_day"])
    assert [b["count"] for b in report["distributions"]["duration_ms"]] == want["duration_hist"]
    assert [b["count"] for b in report["distributions"]["downtime_ms"]] == want["downtime_hist"]


def _report(**params) -> dict:
    defaults = {"since": START.isoformat(), "until": (END + timedelta(seconds=1)).isoformat()}
    migrations, _scope = migrations_for_report(params=_params(**{**defaults, **params}))
    return migration_report_build(migrations=migrations)


# --- figures ------------------------------------------------------------------------------


def test_whole_range_matches_python_over_the_raw_rows(history):
    report = _report()
    assert report["count"] == 400
    assert report["outcomes"]["failed"] > 20  # the data exercises every part of the report
    assert len(report["failures_by_reason"]) == len(ERRORS)
    assert report["downtime_ms"]["count"] > 100
    _assert_report_matches(report, _raw_rows())
    expected = "percentile_cont" if connection.vendor == "postgresql" else "ROW_NUMBER"
    assert expected in report["percentile_method"]


def test_failure_reasons_have_a_label_and_an_example(history):
    report = _report()
    by_reason = {r["reason"]: r for r in report["failures_by_reason"]}
    assert set(by_reason) == set(FailureReason)
    for reason in FailureReason:
        assert by_reason[reason]["label"] == reason.label
        assert by_reason[reason]["example"].startswith(ERRORS[reason])
    counts = [r["count"] for r in report["failures_by_reason"]]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize(
    "params,keep",
    [
        ({"source": "h-a"}, lambda r: r["source__name"] == "h-a"),
        ({"destination": "h-b"}, lambda r: r["destination__name"] == "h-b"),
        ({"host": "h-c"}, lambda r: "h-c" in (r["source__name"], r["destination__name"])),
        ({"vm": "vm-3"}, lambda r: r["vm_name"] == "vm-3"),
        ({"user": "ben"}, lambda r: r["requested_by_name"] == "ben"),
        ({"outcome": ["failed"]}, lambda r: r["status"] == "failed"),
        (
            {"outcome": ["succeeded", "cancelled"]},
            lambda r: r["status"] in ("succeeded", "cancelled"),
        ),
        ({"outcome": ["active"]}, lambda r: r["status"] == "queued"),
        ({"live": "false"}, lambda r: not r["live"]),
        ({"live": "true", "user": "cat"}, lambda r: r["live"] and r["requested_by_name"] == "cat"),
    ],
)
def test_each_filter_matches_python_over_the_raw_rows(history, params, keep):
    rows = _raw_rows(keep)
    assert rows, "the filter must select something"
    report = _report(**params)
    assert report["count"] < 400
    _assert_report_matches(report, rows)


def test_vm_filter_takes_a_uuid_too(history):
    vm_uuid = Migration.objects.filter(vm_name="vm-3").values_list("vm_uuid", flat=True)[0]
    assert _report(vm=str(vm_uuid))["count"] == _report(vm="vm-3")["count"] > 0


def test_time_range_includes_since_and_excludes_until(history):
    since, until = START + timedelta(days=5), START + timedelta(days=9)
    at_since, at_until = _make_history(2, seed=3, start=since, end=since)
    Migration.objects.filter(pk=at_until.pk).update(created_at=until)
    rows = _raw_rows(since=since, until=until)
    report = _report(since=since.isoformat(), until=until.isoformat())
    assert at_since.pk in Migration.objects.filter(created_at=since).values_list("pk", flat=True)
    _assert_report_matches(report, rows)
    later = _report(since=until.isoformat(), until=(until + timedelta(days=1)).isoformat())
    assert later["count"] == len(_raw_rows(since=until, until=until + timedelta(days=1)))
    assert later["count"] >= 1  # the row at `until` belongs to the next range


def test_default_range_is_the_last_30_days():
    _make_history(50, seed=5, start=END - timedelta(days=29), end=END - timedelta(hours=1))
    _make_history(30, seed=6, start=END - timedelta(days=90), end=END - timedelta(days=31))
    migrations, scope = migrations_for_report(params=QueryDict())
    assert (scope.until - scope.since) == timedelta(days=30)
    assert migration_report_build(migrations=migrations)["count"] == 50


def test_single_and_empty_populations():
    (only,) = _make_history(1, seed=1)
    Migration.objects.filter(pk=only.pk).update(
        status="succeeded", total_time_ms=1234, downtime_ms=56, live=True
    )
    report = _report()
    assert report["duration_ms"] == {
        "count": 1,
        "mean": 1234,
        "p50": 1234,
        "p95": 1234,
        "max": 1234,
    }
    assert report["downtime_ms"]["p95"] == 56
    assert report["success_rate"] == 1.0
    empty = _report(
        since=(END + timedelta(days=1)).isoformat(), until=(END + timedelta(days=2)).isoformat()
    )
    assert empty["count"] == 0
    assert empty["success_rate"] is None
    assert empty["duration_ms"] == {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    assert empty["per_host"] == [] and empty["per_day"] == []


def test_the_number_of_queries_does_not_grow_with_the_rows(history):
    """SQL aggregation, not a Python loop over migrations."""
    with CaptureQueriesContext(connection) as small:
        _report()
    _make_history(600, seed=12)
    with CaptureQueriesContext(connection) as large:
        report = _report()
    assert report["count"] == 1000
    assert len(large.captured_queries) == len(small.captured_queries) <= 8


# --- API and page -------------------------------------------------------------------------


def test_api_report_is_the_built_report_with_its_scope(api, history):
    since, until = START.isoformat(), (END + timedelta(seconds=1)).isoformat()
    response = api.get(
        "/api/reports/migrations/", {"since": since, "until": until, "source": "h-a"}
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["scope"]["filters"] == {"source": "h-a"}
    assert body["count"] == len(_raw_rows(lambda r: r["source__name"] == "h-a"))
    _assert_report_matches(
        {**body, "duration_ms": body["duration_ms"], "downtime_ms": body["downtime_ms"]},
        _raw_rows(lambda r: r["source__name"] == "h-a"),
    )


@pytest.mark.parametrize(
    "params,field",
    [
        ({"outcome": "exploded"}, "outcome"),
        ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"live": "perhaps"}, "live"),
    ],
)
def test_api_report_rejects_bad_filters(api, params, field):
    response = api.get("/api/reports/migrations/", params)
    assert response.status_code == 400
    assert field in response.json()


def test_reports_are_for_administrators_and_auditors(viewer_api, viewer_user, client):
    assert APIClient().get("/api/reports/migrations/").status_code == 401
    assert viewer_api.get("/api/reports/migrations/").status_code == 403
    client.force_login(viewer_user)
    assert client.get("/reports/migrations/").status_code == 403
    viewer_user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    auditor = get_user_model().objects.get(pk=viewer_user.pk)
    api = APIClient()
    api.force_authenticate(auditor)
    assert api.get("/api/reports/migrations/").status_code == 200


def test_report_page_shows_figures_charts_and_downloads(admin_user, client, history):
    client.force_login(admin_user)
    since = START.date().isoformat()
    page = client.get("/reports/migrations/", {"since": since, "outcome": "failed", "live": "true"})
    assert page.status_code == 200
    report = page.context["report"]
    assert report["count"] == report["outcomes"]["failed"] > 0
    # The form shows the range in force, as its datetime-local inputs take it.
    assert page.context["filters"]["since"] == f"{since}T00:00"
    assert page.context["filters"]["until"] == page.context["scope"].until.strftime(
        "%Y-%m-%dT%H:%M"
    )
    html = page.content.decode()
    assert 'id="report-data"' in html  # chart data for static/audit/report.js
    assert "audit/report.js" in html
    assert (
        f"/api/reports/migrations/export.csv?since={since}&amp;outcome=failed&amp;live=true" in html
    )
    assert "/api/reports/migrations/export.json?" in html
    assert client.get("/reports/migrations/", {"since": "bad"}).status_code == 400


# --- the synthetic history ------------------------------------------------------------------


def test_seed_history_writes_a_consistent_history():
    options = seed_history.SeedOptions(
        migrations=600, events=3_500, hosts=6, vms=80, users=4, days=60, seed=3
    )
    seed_history.seed(options, out=io.StringIO())
    assert Migration.objects.count() == 600
    assert Host.objects.count() == 6
    assert AuditEvent.objects.count() >= 3_500
    # Events are in time order by id, as written by a live system.
    times = list(AuditEvent.objects.order_by("id").values_list("occurred_at", flat=True))
    assert times == sorted(times)
    # Every migration has its lifecycle, ending in its outcome.
    requested = AuditEvent.objects.filter(event_type=EventType.MIGRATION_REQUESTED)
    assert requested.count() == 600
    assert set(requested.values_list("target_id", flat=True)) == {
        str(pk) for pk in Migration.objects.values_list("pk", flat=True)
    }
    for status, event_type in [
        (MigrationStatus.SUCCEEDED, EventType.MIGRATION_SUCCEEDED),
        (MigrationStatus.FAILED, EventType.MIGRATION_FAILED),
        (MigrationStatus.CANCELLED, EventType.MIGRATION_CANCELLED),
    ]:
        assert (
            AuditEvent.objects.filter(event_type=event_type).count()
            == (Migration.objects.filter(status=status).count())
            > 0
        )
    # Every failed migration has its reason, and only failed ones.
    failed = Migration.objects.filter(status=MigrationStatus.FAILED)
    assert set(failed.values_list("failure_reason", flat=True)) == {
        R.PRECHECK,
        R.TIMEOUT,
        R.WORKER_LOST,
        R.UNREACHABLE,
        R.LIBVIRT,
    }
    assert not Migration.objects.exclude(status=MigrationStatus.FAILED).exclude(failure_reason="")
    ok = Migration.objects.filter(status="succeeded", live=True).first()
    assert ok.completed_stats["downtime"] == ok.downtime_ms
    assert ok.finished_at > ok.started_at > ok.created_at
    # And the report over it agrees with Python, like over hand-made rows.
    first = Migration.objects.order_by("created_at").values_list("created_at", flat=True)[0]
    rows = _raw_rows(since=first, until=END + timedelta(days=1))
    migrations, _ = migrations_for_report(
        params=_params(since=first.isoformat(), until=(END + timedelta(days=1)).isoformat())
    )
    _assert_report_matches(migration_report_build(migrations=migrations), rows)
