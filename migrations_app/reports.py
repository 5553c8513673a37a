"""Migration reports: figures aggregated in SQL over the Migration table, and exports.

Every figure is computed by the database; Python only reads a handful of result rows
(one row per route source -> destination, per failure reason, per day; one aggregate
row; a few rank rows for percentiles on SQLite). Nothing here loops over migrations,
except the exports, which stream them.

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
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterator

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
    TextField,
    Value,
    When,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import RowNumber

from hosts.models import Host
from migrations_app.domain.lifecycle import ACTIVE_STATUSES, FailureReason, MigrationStatus
from migrations_app.models import Migration

PERCENTILES = (0.5, 0.95)
SUCCEEDED = MigrationStatus.SUCCEEDED
FAILED = MigrationStatus.FAILED
CANCELLED = MigrationStatus.CANCELLED

# A failed migration without a reason (none should exist: the engine records one with
# every failure, and migration 0005 classified the older rows).
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
    """The UTC calendar day of a timestamp, without a per-row Python function on SQLite
    (Django's TruncDate calls one there): SQLite keeps UTC timestamps as ISO text."""

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
    """SQLite: for each field, the values at the ranks around (n - 1) * p, by a
    ROW_NUMBER() window per field (NULLs last) in one query over `queryset`; the
    percentiles are interpolated from them."""
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
    """The summary of `migrations` (already filtered): see the module docstring.

    Five queries whatever the number of rows (six on SQLite): counts per route
    (source, destination), summed into the outcomes and the per-host table; figures of
    the succeeded migrations (with the percentiles on PostgreSQL); failures by reason;
    per day; host names; on SQLite one query with a ROW_NUMBER() window per metric.
    """
    migrations = migrations.order_by()
    vendor = connections[migrations.db].vendor
    routes = _routes(migrations)
    row = {
        key: sum(r[key] for r in routes)
        for key in ("count", "succeeded", "failed", "cancelled", "active", "live")
    }
    row["transferred_bytes"] = sum(r["transferred_bytes"] or 0 for r in routes)
    # Durations and downtimes: succeeded migrations; COUNT/AVG/MAX of a column skip NULLs.
    # Written as "not any other status" (the same rows): SQLite then reads the time range
    # instead of 90,000 rows one by one through the (status, created_at) index.
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


def _failures_by_reason(migrations: QuerySet[Migration]) -> list[dict]:
    """Failed migrations per `failure_reason` (lifecycle.FailureReason), most first."""
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
    """Counts per (source, destination): at most hosts x (hosts - 1) rows, from which
    the outcome counts and the per-host table are summed."""
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
JOB_STAT_SUCCESS = JOB_STAT_KEYS.index("success")
EXPORT_CHUNK_ROWS = 1000
EXPORT_BLOCK_BYTES = 512 * 1024


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
CSV_HEADER = [name for name, _ in RECORD_COLUMNS] + [f"stats.{k}" for k in JOB_STAT_KEYS]


class IsoTimestamp(Func):
    """A timestamp as ISO 8601 text in UTC, made by the database:
    YYYY-MM-DDTHH:MM:SS.ffffff+00:00 (always six fraction digits)."""

    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps UTC as "YYYY-MM-DD HH:MM:SS[.ffffff]" (no fraction when it is 0).
        template = (
            "(replace(%(expressions)s, ' ', 'T') || "
            "CASE WHEN length(%(expressions)s) = 19 THEN '.000000' ELSE '' END || '+00:00')"
        )
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = (
            "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
        )
        return self.as_sql(compiler, connection, template=template, **extra)


UUID_SPANS = [(1, 8), (9, 4), (13, 4), (17, 4), (21, 12)]


class UUIDText(Func):
    """A UUID as its canonical text (SQLite keeps 32 hex digits)."""

    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra):
        parts = ["substr(%(expressions)s, {}, {})".format(*span) for span in UUID_SPANS]
        template = " || '-' || ".join(parts)
        return self.as_sql(compiler, connection, template=f"({template})", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="(%(expressions)s)::text", **extra)


def _export_queryset(migrations: QuerySet[Migration], *, stats_in_sql: bool) -> QuerySet:
    """values_list of the export's columns, with the text conversions done by the
    database (times, UUIDs, booleans as true/false): Python-side conversion of 100,000
    rows (Django's converters, or psycopg's timestamp loader) costs more than the rest
    of the export together. On PostgreSQL the `stats.*` columns come from jsonb (->>)
    too; SQLite would re-parse the JSON for every key, so there the statistics are
    decoded once per row in Python."""
    fields = {f.attname: f for f in Migration._meta.concrete_fields}
    expressions = {}
    lookups = []
    for name, lookup in RECORD_COLUMNS:
        kind = fields[name].get_internal_type() if name in fields else ""
        if kind == "DateTimeField":
            expressions[f"x_{name}"] = IsoTimestamp(name)
        elif kind == "UUIDField":
            expressions[f"x_{name}"] = UUIDText(name)
        elif kind == "BooleanField":
            expressions[f"x_{name}"] = Case(
                When(**{name: True}, then=Value("true")),
                default=Value("false"),
                output_field=CharField(),
            )
        lookups.append(f"x_{name}" if f"x_{name}" in expressions else lookup)
    if stats_in_sql:
        for key in JOB_STAT_KEYS:
            expressions[f"x_stats_{key}"] = KT(f"completed_stats__{key}")
            lookups.append(f"x_stats_{key}")
    queryset = migrations.order_by("created_at", "id").annotate(**expressions)
    return queryset.values_list(*lookups)


def _raw_chunks(queryset: QuerySet) -> Iterator[list[tuple]]:
    """Rows as the database driver returns them, without Django's per-value converters,
    EXPORT_CHUNK_ROWS at a time: a server-side cursor on PostgreSQL, fetchmany on
    SQLite; one chunk in memory at most."""
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    with connections[queryset.db].chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(EXPORT_CHUNK_ROWS):
            yield rows


def _csv_line(values: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def migrations_csv_stream(*, migrations: QuerySet[Migration]) -> Iterator[str | bytes]:
    """The CSV export: a header, then one line per migration (oldest first), every field
    of the record (times in ISO 8601 UTC, JSON fields as JSON text) and each of
    libvirt's completed statistics in its own `stats.*` column. Yields blocks of lines.

    PostgreSQL writes the lines itself (COPY (SELECT ...) TO STDOUT, streamed in blocks
    of EXPORT_BLOCK_BYTES); on SQLite Python's csv module writes them, one block per
    EXPORT_CHUNK_ROWS rows. Both parse to the same values; PostgreSQL quotes empty
    strings ("") where Python leaves them bare.
    """
    yield _csv_line(CSV_HEADER)
    if connections[migrations.db].vendor == "postgresql":
        yield from _postgresql_copy_csv(_export_queryset(migrations, stats_in_sql=True))
        return
    queryset = _export_queryset(migrations, stats_in_sql=False)
    stats_index = [name for name, _ in RECORD_COLUMNS].index("completed_stats")
    no_stats = [None] * len(JOB_STAT_KEYS)
    decode = json.JSONDecoder().decode
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for rows in _raw_chunks(queryset):
        lines = []
        for row in rows:
            raw = row[stats_index]
            stats = decode(raw) if raw and raw != "null" else None
            if stats:
                flat = list(map(stats.get, JOB_STAT_KEYS))
                if isinstance(flat[JOB_STAT_SUCCESS], bool):
                    flat[JOB_STAT_SUCCESS] = "true" if flat[JOB_STAT_SUCCESS] else "false"
                lines.append([*row, *flat])
            else:
                lines.append([*row, *no_stats])
        writer.writerows(lines)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _postgresql_copy_csv(queryset: QuerySet) -> Iterator[bytes]:
    """The rows of `queryset` as CSV written by PostgreSQL (COPY cannot take bind
    parameters: the values are quoted into the statement by psycopg)."""
    connection = connections[queryset.db]
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    statement = f"COPY ({connection.ops.compose_sql(sql, params)}) TO STDOUT (FORMAT csv)"
    block: list[bytes] = []
    size = 0
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for data in copy:
            block.append(bytes(data))
            size += len(data)
            if size >= EXPORT_BLOCK_BYTES:
                yield b"".join(block)
                block, size = [], 0
    if block:
        yield b"".join(block)


def _json_value_encoder(kind: str):
    """How a raw column value becomes JSON text (the database already made times and
    UUIDs text, and hands JSON fields over as JSON text)."""
    if kind == "JSONField":
        return lambda v: "null" if v is None else v
    if kind == "BooleanField":
        return lambda v: v  # the database made it true or false
    if kind in ("CharField", "TextField", "DateTimeField", "UUIDField", ""):
        return lambda v: "null" if v is None else _json_string(v)
    return lambda v: "null" if v is None else str(v)  # numbers


_json_string = json.encoder.encode_basestring  # the C version: quotes and escapes


def migrations_json_stream(*, migrations: QuerySet[Migration], scope: dict) -> Iterator[str]:
    """The JSON export: {"scope": ..., "migrations": [record, ...]}, streamed; a record
    has every field of the Migration (hosts as id and name, times in ISO 8601 UTC).
    Built from the same raw rows as the CSV, one block per chunk of rows."""
    fields = {f.attname: f for f in Migration._meta.concrete_fields}
    columns = [
        (
            _json_string(name) + ":",
            _json_value_encoder(fields[name].get_internal_type() if name in fields else ""),
        )
        for name, _ in RECORD_COLUMNS
    ]
    queryset = _export_queryset(migrations, stats_in_sql=False)
    yield '{"scope":' + DjangoJSONEncoder(separators=(",", ":")).encode(scope) + ',"migrations":['
    separator = ""
    for rows in _raw_chunks(queryset):
        records = [
            "{"
            + ",".join(
                key + encode(value) for (key, encode), value in zip(columns, row, strict=True)
            )
            + "}"
            for row in rows
        ]
        yield separator + ",".join(records)
        separator = ","
    yield "]}"
