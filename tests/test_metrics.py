"""GET /metrics: the Prometheus exposition parsed with prometheus_client's own parser,
every figure checked against the rows made here."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from hosts.models import Host, HostStatus
from migrations_app.domain.lifecycle import FailureReason, MigrationStatus, Phase
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db

S = MigrationStatus


@pytest.fixture
def hosts():
    now = timezone.now()
    return {
        "up": Host.objects.create(
            name="hv-up", address="127.0.0.11", status=HostStatus.REACHABLE, last_seen_at=now
        ),
        "down": Host.objects.create(
            name="hv-down", address="127.0.0.12", status=HostStatus.UNREACHABLE
        ),
    }


def _migration(hosts, status, **fields) -> Migration:
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(),
        vm_name="vm",
        source=hosts["up"],
        destination=hosts["down"],
        requested_by_name="t",
        max_downtime_ms=500,
        timeout_s=600,
        status=status,
        **fields,
    )


@pytest.fixture
def rows(hosts):
    now = timezone.now()
    done = [
        # (total_time_ms, downtime_ms, transferred_bytes)
        (4_000, 20, 1_000),
        (45_000, 300, 2_500),
        (5_000, 500, 7),  # exactly on the 5 s and 0.5 s bounds: inside them (le)
        (40_000_000, 12_000, 10**10),  # beyond the last bounds: only in +Inf
    ]
    for total, down, moved in done:
        _migration(
            hosts,
            S.SUCCEEDED,
            total_time_ms=total,
            downtime_ms=down,
            transferred_bytes=moved,
            finished_at=now,
        )
    _migration(hosts, S.FAILED, failure_reason=FailureReason.TIMEOUT)
    _migration(hosts, S.FAILED, failure_reason=FailureReason.TIMEOUT)
    _migration(hosts, S.FAILED, failure_reason=FailureReason.PRECHECK)
    _migration(hosts, S.QUEUED)
    _migration(hosts, S.QUEUED, phase=Phase.WAITING_FOR_SLOT)
    _migration(hosts, S.QUEUED, phase=Phase.WAITING_FOR_SLOT)
    _migration(hosts, S.QUEUED, phase=Phase.WAITING_FOR_BATCH)
    _migration(hosts, S.SCHEDULED)
    _migration(hosts, S.MIGRATING, heartbeat_at=now - timedelta(seconds=3))
    _migration(hosts, S.CHECKING, heartbeat_at=now - timedelta(minutes=10))  # stale
    _migration(hosts, S.COMPLETING)  # no heartbeat at all: stale too
    _migration(hosts, S.NEEDS_ATTENTION)
    return done


def _scrape(client, **extra) -> dict:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _get(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_migration_counts_queue_and_activity(client, rows):
    samples = _scrape(client)
    assert _get(samples, "portal_migrations", status="succeeded", failure_reason="") == 4
    assert _get(samples, "portal_migrations", status="failed", failure_reason="timeout") == 2
    assert _get(samples, "portal_migrations", status="failed", failure_reason="precheck") == 1
    assert _get(samples, "portal_migrations", status="cancelled", failure_reason="") == 0
    assert _get(samples, "portal_migrations_active") == 9  # 4 queued, scheduled, 3 running, 1
    assert _get(samples, "portal_migrations_running") == 3
    assert _get(samples, "portal_migration_queue_depth", state="queued") == 1
    assert _get(samples, "portal_migration_queue_depth", state="waiting_for_slot") == 2
    assert _get(samples, "portal_migration_queue_depth", state="waiting_for_batch") == 1
    assert _get(samples, "portal_migration_queue_depth", state="scheduled") == 1
    assert _get(samples, "portal_migration_transferred_bytes_total") == 1_000 + 2_500 + 7 + 10**10


def test_histograms_are_cumulative_over_the_finished_rows(client, rows):
    samples = _scrape(client)
    duration = "portal_migration_duration_seconds"
    assert _get(samples, f"{duration}_bucket", le="5.0") == 2  # 4 s and 5 s
    assert _get(samples, f"{duration}_bucket", le="30.0") == 2
    assert _get(samples, f"{duration}_bucket", le="60.0") == 3  # and 45 s
    assert _get(samples, f"{duration}_bucket", le="21600.0") == 3
    assert _get(samples, f"{duration}_bucket", le="+Inf") == 4
    assert _get(samples, f"{duration}_count") == 4
    assert _get(samples, f"{duration}_sum") == pytest.approx(
        (4_000 + 45_000 + 5_000 + 40_000_000) / 1000
    )
    downtime = "portal_migration_downtime_seconds"
    assert _get(samples, f"{downtime}_bucket", le="0.025") == 1
    assert _get(samples, f"{downtime}_bucket", le="0.25") == 1
    assert _get(samples, f"{downtime}_bucket", le="0.5") == 3
    assert _get(samples, f"{downtime}_bucket", le="10.0") == 3
    assert _get(samples, f"{downtime}_bucket", le="+Inf") == 4
    assert _get(samples, f"{downtime}_sum") == pytest.approx((20 + 300 + 500 + 12_000) / 1000)


def test_hosts_and_heartbeats(client, rows, hosts, settings):
    settings.MIGRATION_STALE_AFTER_S = 30
    samples = _scrape(client)
    assert _get(samples, "portal_host_up", host="hv-up") == 1
    assert _get(samples, "portal_host_up", host="hv-down") == 0
    # A retired host is not polled: it is left out rather than reported down for ever.
    Host.objects.filter(name="hv-down").update(retired=True)
    assert ("portal_host_up", (("host", "hv-down"),)) not in _scrape(client)
    assert _get(samples, "portal_host_last_seen_timestamp_seconds", host="hv-up") == pytest.approx(
        hosts["up"].last_seen_at.timestamp()
    )
    assert ("portal_host_last_seen_timestamp_seconds", (("host", "hv-down"),)) not in samples
    assert 3 <= _get(samples, "portal_worker_heartbeat_age_seconds") < 60
    assert _get(samples, "portal_worker_heartbeats_stale") == 2


def test_empty_database_has_zero_counts_and_no_heartbeat_age(client, db):
    samples = _scrape(client)
    assert _get(samples, "portal_migrations", status="queued", failure_reason="") == 0
    assert _get(samples, "portal_migration_duration_seconds_count") == 0
    assert _get(samples, "portal_worker_heartbeats_stale") == 0
    assert not any(name == "portal_worker_heartbeat_age_seconds" for name, _ in samples)


def test_the_number_of_queries_does_not_grow_with_the_rows(client, hosts):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            _scrape(client)
        return len(captured)

    few = queries()
    for _ in range(30):
        _migration(hosts, S.SUCCEEDED, total_time_ms=1_000, downtime_ms=10)
    assert queries() == few


def test_without_a_token_only_loopback_is_answered(client, db, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403


def test_with_a_token_every_request_needs_it(client, db, settings):
    settings.METRICS_TOKEN = "s3cret-token-for-scrapes"
    refused = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", REMOTE_ADDR="192.0.2.7")
    assert wrong.status_code == 401
    right = client.get(
        "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token-for-scrapes", REMOTE_ADDR="192.0.2.7"
    )
    assert right.status_code == 200
    assert b"portal_migrations" in right.content
