"""Prometheus metrics at `/metrics`, SQL aggregates read at scrape time (no counters in
the process: every web process answers the same). Access: a bearer token if
`PORTAL_METRICS_TOKEN` is set, else loopback only.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Sequence

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, Max, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.db import DbNow
from hosts.models import Host, HostStatus
from migrations_app.models import (
    ACTIVE_STATUSES,
    RUNNING_STATUSES,
    Migration,
    MigrationStatus,
    Phase,
    WebhookDelivery,
    WebhookDeliveryStatus,
    heartbeat_stale,
)

# Upper bounds, in seconds: from a small VM's seconds to copied disks' hours.
DURATION_BUCKETS_S: tuple[float, ...] = (5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
# The pause at the switch-over: the default max downtime is 500 ms.
DOWNTIME_BUCKETS_S: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

LOOPBACK = {"127.0.0.1", "::1"}


def _histogram(
    name: str, documentation: str, field: str, buckets: Sequence[float]
) -> HistogramMetricFamily:
    """A cumulative histogram (in seconds) of a millisecond column, in one query."""
    rows = Migration.objects.filter(**{f"{field}__isnull": False})
    aggregates = {
        f"le{i}": Count("pk", filter=Q(**{f"{field}__lte": b * 1000}))
        for i, b in enumerate(buckets)
    }
    result = rows.aggregate(total=Count("pk"), sum_ms=Sum(field), **aggregates)
    bucket_values = [(repr(float(b)), result[f"le{i}"]) for i, b in enumerate(buckets)]
    bucket_values.append(("+Inf", result["total"]))
    sum_s = (result["sum_ms"] or 0) / 1000
    return HistogramMetricFamily(name, documentation, buckets=bucket_values, sum_value=sum_s)


class PortalCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from self._migrations()
        yield from self._queue()
        yield from self._heartbeats()
        yield from self._hosts()
        yield from self._webhooks()

    def _migrations(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily(
            "portal_migrations",
            "Migration records by status and failure reason.",
            labels=["status", "failure_reason"],
        )
        counts = {
            (row["status"], row["failure_reason"]): row["n"]
            for row in Migration.objects.order_by()
            .values("status", "failure_reason")
            .annotate(n=Count("pk"))
        }
        for status in MigrationStatus.values:  # every status, zero included
            counts.setdefault((status, ""), 0)
        for (status, reason), n in sorted(counts.items()):
            by_status.add_metric([status, reason], n)
        yield by_status

        yield GaugeMetricFamily(
            "portal_migrations_active",
            "Migrations not final yet (scheduled, queued, running, needing attention).",
            value=Migration.objects.filter(status__in=ACTIVE_STATUSES).count(),
        )
        yield GaugeMetricFamily(
            "portal_migrations_running",
            "Migrations a worker owns (checking, migrating, completing).",
            value=Migration.objects.filter(status__in=RUNNING_STATUSES).count(),
        )
        moved = Migration.objects.aggregate(b=Sum("transferred_bytes"))["b"] or 0
        yield CounterMetricFamily(
            "portal_migration_transferred_bytes",
            "Bytes moved by finished migrations (libvirt's completed job statistics).",
            value=moved,
        )
        yield _histogram(
            "portal_migration_duration_seconds",
            "Total time of finished migrations (libvirt's time_elapsed).",
            "total_time_ms",
            DURATION_BUCKETS_S,
        )
        yield _histogram(
            "portal_migration_downtime_seconds",
            "Downtime of finished migrations (the VM paused at the switch-over).",
            "downtime_ms",
            DOWNTIME_BUCKETS_S,
        )

    def _queue(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "portal_migration_queue_depth",
            "Migrations waiting to start: queued (by what they wait for) and scheduled.",
            labels=["state"],
        )
        result = Migration.objects.aggregate(
            slot=Count("pk", filter=Q(status=MigrationStatus.QUEUED, phase=Phase.WAITING_FOR_SLOT)),
            batch=Count(
                "pk", filter=Q(status=MigrationStatus.QUEUED, phase=Phase.WAITING_FOR_BATCH)
            ),
            queued=Count("pk", filter=Q(status=MigrationStatus.QUEUED)),
            scheduled=Count("pk", filter=Q(status=MigrationStatus.SCHEDULED)),
        )
        depth.add_metric(["queued"], result["queued"] - result["slot"] - result["batch"])
        depth.add_metric([Phase.WAITING_FOR_SLOT.value], result["slot"])
        depth.add_metric([Phase.WAITING_FOR_BATCH.value], result["batch"])
        depth.add_metric(["scheduled"], result["scheduled"])
        yield depth

    def _heartbeats(self) -> Iterator[Metric]:
        # Ages on the database's clock, as the reconciler decides (no node's own clock).
        result = Migration.objects.filter(status__in=RUNNING_STATUSES).aggregate(
            age=ExpressionWrapper(DbNow() - Max("heartbeat_at"), output_field=DurationField()),
            stale=Count("pk", filter=heartbeat_stale()),
        )
        if result["age"] is not None:
            yield GaugeMetricFamily(
                "portal_worker_heartbeat_age_seconds",
                "Age of the newest heartbeat of the running migrations (absent: none runs).",
                value=max(0.0, result["age"].total_seconds()),
            )
        yield GaugeMetricFamily(
            "portal_worker_heartbeats_stale",
            "Running migrations whose worker has not written a heartbeat for "
            "PORTAL_MIGRATION_STALE_AFTER_S (the reconciler takes them over).",
            value=result["stale"],
        )

    def _hosts(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "portal_host_up", "1 if the host answered at the last contact, else 0.", labels=["host"]
        )
        seen = GaugeMetricFamily(
            "portal_host_last_seen_timestamp_seconds",
            "When the host last answered (Unix time; absent: never).",
            labels=["host"],
        )
        # A retired host is not polled: its frozen status would raise a false alarm.
        hosts = Host.objects.filter(retired=False).order_by("name")
        for name, status, last_seen in hosts.values_list("name", "status", "last_seen_at"):
            up.add_metric([name], 1 if status == HostStatus.REACHABLE else 0)
            if last_seen is not None:
                seen.add_metric([name], last_seen.timestamp())
        yield up
        yield seen

    def _webhooks(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "portal_webhook_deliveries", "Webhook deliveries by status.", labels=["status"]
        )
        counts = dict(
            WebhookDelivery.objects.order_by().values_list("status").annotate(n=Count("pk"))
        )
        for status in WebhookDeliveryStatus.values:
            deliveries.add_metric([status], counts.get(status, 0))
        yield deliveries


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)
    return request.META.get("REMOTE_ADDR") in LOOPBACK


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        response = HttpResponse("Forbidden: see PORTAL_METRICS_TOKEN.\n", status=403)
        if settings.METRICS_TOKEN:
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
