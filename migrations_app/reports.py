"""Migration reports: figures aggregated by the database, never a loop over migrations.
Percentiles are continuous (`percentile_cont` on PostgreSQL, a ROW_NUMBER() window on
SQLite: the same numbers)."""

from __future__ import annotations

import math
from collections import defaultdict

from django.db import connections
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DateField,
    F,
    FloatField,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
    Window,
)
from django.db.models.functions import RowNumber

from hosts.models import Host
from migrations_app.domain.lifecycle import ACTIVE_STATUSES, FailureReason, MigrationStatus
from migrations_app.models import Migration

PERCENTILES = (0.5, 0.95)
SUCCEEDED = MigrationStatus.SUCCEEDED
FAILED = MigrationStatus.FAILED
CANCELLED = MigrationStatus.CANCELLED

# None should exist: the engine records a reason, migration 0005 classified older rows.
UNRECORDED_REASON_LABEL = "No reason recorded"

# Histogram edges (ms) of the charts; the last bucket is open-ended.
DURATION_EDGES_MS = [0, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000]
DOWNTIME_EDGES_MS = [0, 10, 20, 50, 100, 200, 300, 500, 1_000, 2_000]


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentile (an ordered-set aggregate)."""

    function = "percentile_cont"
    name = "PercentileCont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, *, percentile: float, **extra):
        if not 0 <= percentile <= 1:
            raise ValueError("percentile must be between 0 and 1")
        super().__init__(expression, percentile=float(percentile), **extra)


class UTCDate(Func):
    """The UTC day of a timestamp, without TruncDate's per-row Python function on SQLite."""

    output_field = DateField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 10)")

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="((%(expressions)s) AT TIME ZONE 'UTC')::date"
        )


def _buckets(field: str, edges: list[int]) -> dict[str, Count]:
    counts = {}
    for i, lower in enumerate(edges):
        condition = Q(**{f"{field}__gte": lower})
        if i + 1 < len(edges):
            condition &= Q(**{f"{field}__lt": edges[i + 1]})
        counts[f"{field}__bucket{i}"] = Count("id", filter=condition)
    return counts


def _bucket_rows(row: dict, field: str, edges: list[int]) -> list[dict]:
    return [
        {
            "lower_ms": lower,
            "upper_ms": edges[i + 1] if i + 1 < len(edges) else None,
            "count": row[f"{field}__bucket{i}"],
        }
        for i, lower in enumerate(edges)
    ]


def _interpolate(values_by_rank: dict[int, float], n: int, p: float) -> float:
    position = (n - 1) * p
    lower = math.floor(position)
    upper = min(lower + 1, n - 1)
    low, high = values_by_rank[lower + 1], values_by_rank[upper + 1]  # ranks are 1-based
    return float(low + (high - low) * (position - lower))


def _ranks(n: int) -> set[int]:
    """The 1-based ranks whose values the percentiles of n values interpolate."""
    ranks = set()
    for p in PERCENTILES:
        lower = math.floor((n - 1) * p)
        ranks.update({lower + 1, min(lower + 1, n - 1) + 1})
    return ranks


def _percentiles_by_rank(queryset: QuerySet, counts: dict[str, int]) -> dict[str, dict]:
    """SQLite: each field's percentiles, from one ROW_NUMBER() window per field."""
    windows, wanted, condition = {}, {}, Q()
    for field, n in counts.items():
        if n:
            windows[f"_rank_{field}"] = Window(RowNumber(), order_by=F(field).asc(nulls_last=True))
            wanted[field] = _ranks(n)
            condition |= Q(**{f"_rank_{field}__in": sorted(wanted[field])})
    found: dict[str, dict[int, float]] = {field: {} for field in counts}
    if windows:
        columns = [name for field in windows for name in (field, field.removeprefix("_rank_"))]
        for row in queryset.order_by().annotate(**windows).filter(condition).values_list(*columns):
            for i in range(0, len(row), 2):
                field = columns[i + 1]
                if row[i] in wanted[field]:
                    found[field][row[i]] = row[i + 1]
    return {
        field: {p: _interpolate(found[field], n, p) if n else None for p in PERCENTILES}
        for field, n in counts.items()
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def migration_report_build(*, migrations: QuerySet[Migration]) -> dict:
    """The summary of `migrations` (already filtered), in five queries (six on SQLite)."""
    migrations = migrations.order_by()
    vendor = connections[migrations.db].vendor
    routes = _routes(migrations)
    row = {
        key: sum(r[key] for r in routes)
        for key in ("count", "succeeded", "failed", "cancelled", "active", "live")
    }
    row["transferred_bytes"] = sum(r["transferred_bytes"] or 0 for r in routes)
    # "Not any other status" (the same rows): SQLite then reads the time range instead
    # of every row through the (status, created_at) index.
    succeeded = migrations.exclude(status__in=[s for s in MigrationStatus if s != SUCCEEDED])
    figures = {
        "duration_count": Count("total_time_ms"),
        "duration_mean": Avg("total_time_ms"),
        "duration_max": Max("total_time_ms"),
        "downtime_count": Count("downtime_ms"),
        "downtime_mean": Avg("downtime_ms"),
        "downtime_max": Max("downtime_ms"),
        "setup_mean": Avg("setup_time_ms"),
        **_buckets("total_time_ms", DURATION_EDGES_MS),
        **_buckets("downtime_ms", DOWNTIME_EDGES_MS),
    }
    if vendor == "postgresql":
        for p in PERCENTILES:
            figures[f"duration_p{p}"] = PercentileCont("total_time_ms", percentile=p)
            figures[f"downtime_p{p}"] = PercentileCont("downtime_ms", percentile=p)
    row.update(succeeded.aggregate(**figures))

    if vendor == "postgresql":
        duration_p = {p: row[f"duration_p{p}"] for p in PERCENTILES}
        downtime_p = {p: row[f"downtime_p{p}"] for p in PERCENTILES}
        method = "percentile_cont (PostgreSQL ordered-set aggregate)"
    else:
        ranked = _percentiles_by_rank(
            succeeded,
            {"total_time_ms": row["duration_count"], "downtime_ms": row["downtime_count"]},
        )
        duration_p, downtime_p = ranked["total_time_ms"], ranked["downtime_ms"]
        method = "ROW_NUMBER() window, linear interpolation (same as percentile_cont)"

    return {
        "count": row["count"],
        "outcomes": {key: row[key] for key in ("succeeded", "failed", "cancelled", "active")},
        "live": row["live"],
        "offline": row["count"] - row["live"],
        "success_rate": _share(row["succeeded"], row["succeeded"] + row["failed"]),
        "failures_by_reason": _failures_by_reason(migrations),
        "duration_ms": _figures(row, "duration", duration_p),
        "downtime_ms": _figures(row, "downtime", downtime_p),
        "setup_time_ms_mean": _float(row["setup_mean"]),
        "transferred_bytes": int(row["transferred_bytes"] or 0),
        "per_host": _per_host(routes),
        "per_day": _per_day(migrations),
        "distributions": {
            "duration_ms": _bucket_rows(row, "total_time_ms", DURATION_EDGES_MS),
            "downtime_ms": _bucket_rows(row, "downtime_ms", DOWNTIME_EDGES_MS),
        },
        "percentile_method": method,
    }


def _float(value) -> float | None:
    return float(value) if value is not None else None


def _figures(row: dict, name: str, percentiles: dict) -> dict:
    return {
        "count": row[f"{name}_count"],
        "mean": _float(row[f"{name}_mean"]),
        "p50": percentiles[0.5],
        "p95": percentiles[0.95],
        "max": row[f"{name}_max"],
    }


def _failures_by_reason(migrations: QuerySet[Migration]) -> list[dict]:
    labels = dict(FailureReason.choices)
    rows = (
        migrations.filter(status=FAILED)
        .values("failure_reason")
        .annotate(count=Count("id"), example=Max("error"))
        .order_by("-count", "failure_reason")
    )
    return [
        {
            "reason": r["failure_reason"],
            "label": labels.get(r["failure_reason"], UNRECORDED_REASON_LABEL),
            "count": r["count"],
            "example": r["example"],
        }
        for r in rows
    ]


def _routes(migrations: QuerySet[Migration]) -> list[dict]:
    """Counts per (source, destination), summed into the outcomes and the per-host table."""
    return list(
        migrations.values("source_id", "destination_id").annotate(
            count=Count("id"),
            succeeded=Count("id", filter=Q(status=SUCCEEDED)),
            failed=Count("id", filter=Q(status=FAILED)),
            cancelled=Count("id", filter=Q(status=CANCELLED)),
            active=Count("id", filter=Q(status__in=ACTIVE_STATUSES)),
            live=Count("id", filter=Q(live=True)),
            transferred_bytes=Sum("transferred_bytes"),
        )
    )


def _per_host(routes: list[dict]) -> list[dict]:
    table: dict[int, dict] = defaultdict(
        lambda: {"out": 0, "in": 0, "failed_out": 0, "failed_in": 0}
    )
    for r in routes:
        source, destination = table[r["source_id"]], table[r["destination_id"]]
        source["out"] += r["count"]
        source["failed_out"] += r["failed"]
        destination["in"] += r["count"]
        destination["failed_in"] += r["failed"]
    names = dict(Host.objects.filter(pk__in=list(table)).order_by().values_list("pk", "name"))
    rows = [
        {"host": names[pk], **counts, "failed": counts["failed_out"] + counts["failed_in"]}
        for pk, counts in table.items()
    ]
    return sorted(rows, key=lambda r: r["host"])


def _per_day(migrations: QuerySet[Migration]) -> list[dict]:
    rows = (
        migrations.annotate(day=UTCDate("created_at"))
        .values("day")
        .annotate(
            total=Count("id"),
            succeeded=Count("id", filter=Q(status=SUCCEEDED)),
            failed=Count("id", filter=Q(status=FAILED)),
            cancelled=Count("id", filter=Q(status=CANCELLED)),
        )
        .order_by("day")
    )
    return [{**r, "day": r["day"].isoformat()} for r in rows]
