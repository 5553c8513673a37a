"""Migration reports: figures aggregated in SQL over the Migration table, and exports.

Every figure is computed by the database; Python only reads a handful of result rows
(one aggregate row, one row per failure reason, per host, per day; a few rank rows for
percentiles on SQLite). Nothing here loops over migrations, except the exports, which
stream them.

Populations:
- `count` and the outcome counts: every migration requested in the range (and filters);
- success rate: succeeded / (succeeded + failed); cancelled and still-running
  migrations are counted but neither a success nor a failure;
- duration (libvirt's `time_elapsed`, `total_time_ms`) and downtime (`downtime_ms`):
  succeeded migrations that recorded them (offline migrations have no downtime);
- data moved: the sum of `transferred_bytes` (recorded when a migration completes).

Percentiles are the continuous kind (linear interpolation between the two closest
ranks, rank (n - 1) * p): PostgreSQL computes them with `percentile_cont(p) WITHIN
GROUP (ORDER BY ...)` in the aggregate query; on SQLite a `ROW_NUMBER() OVER (ORDER BY
value)` window over the filtered rows fetches just the rows at the ranks needed, and
the two values are interpolated here. Both give the same numbers.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import (
    Aggregate,
    Avg,
    Case,
    CharField,
    Count,
    DateField,
    F,
    FloatField,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber

from migrations_app.models import ACTIVE_STATUSES, Migration, MigrationStatus

PERCENTILES = (0.5, 0.95)
SUCCEEDED = MigrationStatus.SUCCEEDED
FAILED = MigrationStatus.FAILED
CANCELLED = MigrationStatus.CANCELLED

# Failure reasons, from the error text the engine writes (first match wins).
FAILURE_REASONS: list[tuple[str, str, Q]] = [
    ("precheck", "A pre-check refused the migration", Q(error__startswith="Pre-checks failed")),
    ("timeout", "Timed out", Q(error__contains="timed out after")),
    ("worker_lost", "The worker running it stopped", Q(error__contains="stopped; ")),
    (
        "unreachable",
        "A host could not be reached",
        Q(error__contains="did not answer within")
        | Q(error__contains="cannot connect to")
        | Q(error__contains="cannot open ")
        | Q(error__contains="handshake"),
    ),
]
OTHER_REASON = ("libvirt", "Error reported by libvirt")

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
    """The UTC calendar day of a timestamp, without a per-row Python function on SQLite
    (Django's TruncDate calls one there): SQLite keeps UTC timestamps as ISO text."""

    output_field = DateField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 10)")

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="((%(expressions)s) AT TIME ZONE 'UTC')::date"
        )


def _buckets(field: str, edges: list[int], base: Q) -> dict[str, Count]:
    counts = {}
    for i, lower in enumerate(edges):
        condition = Q(**{f"{field}__gte": lower})
        if i + 1 < len(edges):
            condition &= Q(**{f"{field}__lt": edges[i + 1]})
        counts[f"{field}__bucket{i}"] = Count("id", filter=base & condition)
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


def _percentiles_by_rank(queryset: QuerySet, field: str, n: int) -> dict[float, float | None]:
    """SQLite: the rows at the ranks around (n - 1) * p, by a ROW_NUMBER() window."""
    if n == 0:
        return {p: None for p in PERCENTILES}
    ranks = set()
    for p in PERCENTILES:
        position = (n - 1) * p
        ranks.update({math.floor(position) + 1, min(math.floor(position) + 1, n - 1) + 1})
    rows = (
        queryset.order_by()
        .filter(**{f"{field}__isnull": False})
        .annotate(_rank=Window(RowNumber(), order_by=[F(field).asc(), F("id").asc()]))
        .filter(_rank__in=sorted(ranks))
        .values_list("_rank", field)
    )
    values_by_rank = dict(rows)
    return {p: _interpolate(values_by_rank, n, p) for p in PERCENTILES}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def migration_report_build(*, migrations: QuerySet[Migration]) -> dict:
    """The summary of `migrations` (already filtered): see the module docstring."""
    migrations = migrations.order_by()
    vendor = connections[migrations.db].vendor
    ok = Q(status=SUCCEEDED)
    has_duration = ok & Q(total_time_ms__isnull=False)
    has_downtime = ok & Q(downtime_ms__isnull=False)
    aggregates = {
        "count": Count("id"),
        "succeeded": Count("id", filter=ok),
        "failed": Count("id", filter=Q(status=FAILED)),
        "cancelled": Count("id", filter=Q(status=CANCELLED)),
        "active": Count("id", filter=Q(status__in=ACTIVE_STATUSES)),
        "live": Count("id", filter=Q(live=True)),
        "duration_count": Count("id", filter=has_duration),
        "duration_mean": Avg("total_time_ms", filter=has_duration),
        "duration_max": Max("total_time_ms", filter=has_duration),
        "downtime_count": Count("id", filter=has_downtime),
        "downtime_mean": Avg("downtime_ms", filter=has_downtime),
        "downtime_max": Max("downtime_ms", filter=has_downtime),
        "setup_mean": Avg("setup_time_ms", filter=ok & Q(setup_time_ms__isnull=False)),
        "transferred_bytes": Sum("transferred_bytes"),
        **_buckets("total_time_ms", DURATION_EDGES_MS, has_duration),
        **_buckets("downtime_ms", DOWNTIME_EDGES_MS, has_downtime),
    }
    if vendor == "postgresql":
        for p in PERCENTILES:
            key = f"{int(p * 100)}"
            aggregates[f"duration_p{key}"] = PercentileCont(
                "total_time_ms", percentile=p, filter=has_duration
            )
            aggregates[f"downtime_p{key}"] = PercentileCont(
                "downtime_ms", percentile=p, filter=has_downtime
            )
    row = migrations.aggregate(**aggregates)

    if vendor == "postgresql":
        duration_p = {p: row[f"duration_p{int(p * 100)}"] for p in PERCENTILES}
        downtime_p = {p: row[f"downtime_p{int(p * 100)}"] for p in PERCENTILES}
        method = "percentile_cont (PostgreSQL ordered-set aggregate)"
    else:
        duration_p = _percentiles_by_rank(
            migrations.filter(has_duration), "total_time_ms", row["duration_count"]
        )
        downtime_p = _percentiles_by_rank(
            migrations.filter(has_downtime), "downtime_ms", row["downtime_count"]
        )
        method = "ROW_NUMBER() window, linear interpolation (same as percentile_cont)"

    return {
        "count": row["count"],
        "outcomes": {
            "succeeded": row["succeeded"],
            "failed": row["failed"],
            "cancelled": row["cancelled"],
            "active": row["active"],
        },
        "live": row["live"],
        "offline": row["count"] - row["live"],
        "success_rate": _share(row["succeeded"], row["succeeded"] + row["failed"]),
        "failures_by_reason": _failures_by_reason(migrations),
        "duration_ms": {
            "count": row["duration_count"],
            "mean": _float(row["duration_mean"]),
            "p50": duration_p[0.5],
            "p95": duration_p[0.95],
            "max": row["duration_max"],
        },
        "downtime_ms": {
            "count": row["downtime_count"],
            "mean": _float(row["downtime_mean"]),
            "p50": downtime_p[0.5],
            "p95": downtime_p[0.95],
            "max": row["downtime_max"],
        },
        "setup_time_ms_mean": _float(row["setup_mean"]),
        "transferred_bytes": int(row["transferred_bytes"] or 0),
        "per_host": _per_host(migrations),
        "per_day": _per_day(migrations),
        "distributions": {
            "duration_ms": _bucket_rows(row, "total_time_ms", DURATION_EDGES_MS),
            "downtime_ms": _bucket_rows(row, "downtime_ms", DOWNTIME_EDGES_MS),
        },
        "percentile_method": method,
    }


def _float(value) -> float | None:
    return float(value) if value is not None else None


def _failures_by_reason(migrations: QuerySet[Migration]) -> list[dict]:
    labels = {code: label for code, label, _ in FAILURE_REASONS}
    labels[OTHER_REASON[0]] = OTHER_REASON[1]
    reason = Case(
        *[When(condition, then=Value(code)) for code, _, condition in FAILURE_REASONS],
        default=Value(OTHER_REASON[0]),
        output_field=CharField(),
    )
    rows = (
        migrations.filter(status=FAILED)
        .annotate(reason=reason)
        .values("reason")
        .annotate(count=Count("id"), example=Max("error"))
        .order_by("-count", "reason")
    )
    return [
        {
            "reason": r["reason"],
            "label": labels[r["reason"]],
            "count": r["count"],
            "example": r["example"],
        }
        for r in rows
    ]


def _per_host(migrations: QuerySet[Migration]) -> list[dict]:
    table: dict[str, dict] = {}

    def row(name: str) -> dict:
        return table.setdefault(
            name, {"host": name, "out": 0, "in": 0, "failed_out": 0, "failed_in": 0}
        )

    failed = Count("id", filter=Q(status=FAILED))
    for r in migrations.values("source__name").annotate(n=Count("id"), failed=failed):
        row(r["source__name"]).update(out=r["n"], failed_out=r["failed"])
    for r in migrations.values("destination__name").annotate(n=Count("id"), failed=failed):
        row(r["destination__name"]).update({"in": r["n"], "failed_in": r["failed"]})
    for r in table.values():
        r["failed"] = r["failed_out"] + r["failed_in"]
    return sorted(table.values(), key=lambda r: r["host"])


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


# --- exports ----------------------------------------------------------------------------

# libvirt's job statistics (virDomainGetJobStats typed parameters), one column each;
# any other key is in the raw `completed_stats` column.
JOB_STAT_KEYS = [
    "type",
    "operation",
    "success",
    "errmsg",
    "time_elapsed",
    "time_elapsed_net",
    "time_remaining",
    "downtime",
    "downtime_net",
    "setup_time",
    "data_total",
    "data_processed",
    "data_remaining",
    "memory_total",
    "memory_processed",
    "memory_remaining",
    "memory_constant",
    "memory_normal",
    "memory_normal_bytes",
    "memory_bps",
    "memory_dirty_rate",
    "memory_page_size",
    "memory_iteration",
    "memory_postcopy_requests",
    "disk_total",
    "disk_processed",
    "disk_remaining",
    "disk_bps",
    "disk_temp_used",
    "disk_temp_total",
    "compression_cache",
    "compression_bytes",
    "compression_pages",
    "compression_cache_misses",
    "compression_overflow",
    "auto_converge_throttle",
]
EXPORT_CHUNK_ROWS = 2000


def _record_columns() -> list[tuple[str, str]]:
    """(column name, values_list lookup) for every field of the Migration record, in
    model order, with each host's name after its id."""
    columns = []
    for field in Migration._meta.concrete_fields:
        columns.append((field.attname, field.attname))
        if field.name in ("source", "destination"):
            columns.append((field.name, f"{field.name}__name"))
    return columns


RECORD_COLUMNS = _record_columns()
JSON_COLUMNS = {"checks", "completed_stats"}
CSV_HEADER = [name for name, _ in RECORD_COLUMNS] + [f"stats.{k}" for k in JOB_STAT_KEYS]


def _rows(migrations: QuerySet[Migration]) -> Iterator[tuple]:
    lookups = [lookup for _, lookup in RECORD_COLUMNS]
    return (
        migrations.order_by("created_at", "id")
        .values_list(*lookups)
        .iterator(chunk_size=EXPORT_CHUNK_ROWS)
    )


def _csv_value(value) -> object:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class _Line:
    """A file-like object whose write() hands back what it was given (for csv.writer)."""

    def write(self, value: str) -> str:
        return value


def migrations_csv_stream(*, migrations: QuerySet[Migration]) -> Iterator[str]:
    """The CSV export: a header, then one line per migration (oldest first), every field
    of the record and each of libvirt's completed statistics. Yields blocks of lines."""
    writer = csv.writer(_Line())
    stats_index = [name for name, _ in RECORD_COLUMNS].index("completed_stats")
    json_indexes = [i for i, (name, _) in enumerate(RECORD_COLUMNS) if name in JSON_COLUMNS]
    yield writer.writerow(CSV_HEADER)
    block: list[str] = []
    for row in _rows(migrations):
        stats = row[stats_index] or {}
        values = [_csv_value(v) for v in row]
        for i in json_indexes:
            if row[i] is not None:
                values[i] = json.dumps(row[i], separators=(",", ":"), sort_keys=True)
        values.extend(_csv_value(stats.get(key)) for key in JOB_STAT_KEYS)
        block.append(writer.writerow(values))
        if len(block) >= 500:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def migrations_json_stream(*, migrations: QuerySet[Migration], scope: dict) -> Iterator[str]:
    """The JSON export: {"scope": ..., "migrations": [record, ...]}, streamed."""
    encoder = DjangoJSONEncoder(separators=(",", ":"))
    names = [name for name, _ in RECORD_COLUMNS]
    yield '{"scope":' + encoder.encode(scope) + ',"migrations":['
    block: list[str] = []
    first = True
    for row in _rows(migrations):
        text = encoder.encode(dict(zip(names, row, strict=True)))
        block.append(text if first else "," + text)
        first = False
        if len(block) >= 500:
            yield "".join(block)
            block = []
    block.append("]}")
    yield "".join(block)
