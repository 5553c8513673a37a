"""The migration exports, CSV and JSON: every field of each record, streamed."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import Case, CharField, F, Func, QuerySet, TextField, Value, When

from migrations_app.models import Migration

# libvirt's job statistics (virDomainGetJobStats typed parameters), one column each;
# any other key is in the raw `completed_stats` column.
JOB_STAT_KEYS = """
    type operation success errmsg time_elapsed time_elapsed_net time_remaining downtime
    downtime_net setup_time data_total data_processed data_remaining memory_total
    memory_processed memory_remaining memory_constant memory_normal memory_normal_bytes
    memory_bps memory_dirty_rate memory_page_size memory_iteration memory_postcopy_requests
    disk_total disk_processed disk_remaining disk_bps disk_temp_used disk_temp_total
    compression_cache compression_bytes compression_pages compression_cache_misses
    compression_overflow auto_converge_throttle
""".split()
JOB_STAT_SUCCESS = JOB_STAT_KEYS.index("success")
EXPORT_CHUNK_ROWS = 1000
EXPORT_BLOCK_BYTES = 512 * 1024


def _record_columns() -> list[tuple[str, str]]:
    """(column name, values_list lookup) of every field, each host's name after its id."""
    columns = []
    for field in Migration._meta.concrete_fields:
        columns.append((field.attname, field.attname))
        if field.name in ("source", "destination"):
            columns.append((field.name, f"{field.name}__name"))
    return columns


RECORD_COLUMNS = _record_columns()
_FIELDS = {f.attname: f for f in Migration._meta.concrete_fields}


def _kind(column: str) -> str:
    return _FIELDS[column].get_internal_type() if column in _FIELDS else ""


CSV_HEADER = [name for name, _ in RECORD_COLUMNS] + [f"stats.{k}" for k in JOB_STAT_KEYS]


class IsoTimestamp(Func):
    """A timestamp as ISO 8601 UTC text, YYYY-MM-DDTHH:MM:SS.ffffff+00:00."""

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


# OWASP CSV injection: a text cell starting with one of these is a formula to a
# spreadsheet; it is written with a leading single quote. Numbers stay numbers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_STARTS_SQLITE = "('=', '+', '-', '@', char(9), char(13))"
_STARTS_POSTGRESQL = "('=', '+', '-', '@', chr(9), chr(13))"
_QUOTE = "''''"  # SQL for the text '


def formula_safe(value: object) -> object:
    """`value`, a string prefixed with ' if a spreadsheet would read it as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class FormulaSafeText(Func):
    """A text column, prefixed with ' where it starts like a formula (in the database:
    on PostgreSQL the exported rows never pass through Python)."""

    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        case = (
            f"CASE WHEN substr({sql}, 1, 1) IN {_STARTS_SQLITE} "
            f"THEN {_QUOTE} || {sql} ELSE {sql} END"
        )
        return case, (*params, *params, *params)

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        case = (
            f"CASE WHEN left({sql}::text, 1) IN {_STARTS_POSTGRESQL} "
            f"THEN {_QUOTE} || {sql}::text ELSE {sql}::text END"
        )
        return case, (*params, *params, *params)


class FormulaSafeStat(Func):
    """One key of completed_stats as text (PostgreSQL's COPY), a string formula-safe."""

    output_field = TextField()

    def __init__(self, column: str, key: str) -> None:
        super().__init__(F(column))
        self.key = key

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        value = f"({sql} ->> %s)"
        case = (
            f"CASE WHEN jsonb_typeof({sql} -> %s) = 'string' "
            f"AND left({value}, 1) IN {_STARTS_POSTGRESQL} "
            f"THEN {_QUOTE} || {value} ELSE {value} END"
        )
        key = (self.key,)
        return case, (*params, *key, *params, *key, *params, *key, *params, *key)


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
    """values_list of the export's columns, converted to text by the database (Python's
    converters cost more than the rest of the export). `stats_in_sql`: the `stats.*`
    columns from jsonb too (SQLite would re-parse the JSON for every key)."""
    expressions = {}
    lookups = []
    for name, lookup in RECORD_COLUMNS:
        kind = _kind(name)
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
        elif kind in ("CharField", "TextField", ""):  # "": a host's name
            expressions[f"x_{name}"] = FormulaSafeText(lookup)
        lookups.append(f"x_{name}" if f"x_{name}" in expressions else lookup)
    if stats_in_sql:
        for key in JOB_STAT_KEYS:
            expressions[f"x_stats_{key}"] = FormulaSafeStat("completed_stats", key)
            lookups.append(f"x_stats_{key}")
    queryset = migrations.order_by("created_at", "id").annotate(**expressions)
    return queryset.values_list(*lookups)


def _raw_chunks(queryset: QuerySet) -> Iterator[list[tuple]]:
    """Raw driver rows (no Django converters), EXPORT_CHUNK_ROWS at a time."""
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    with connections[queryset.db].chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(EXPORT_CHUNK_ROWS):
            yield rows


# Python's csv quotes a field with a CR only if CR ends its lines (RFC 4180's CRLF); a bare
# CR in an error text would otherwise split the row. PostgreSQL's COPY quotes it itself.
CSV_LINE_END = "\r\n"


def _csv_line(values: list, line_end: str = CSV_LINE_END) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=line_end).writerow(values)
    return buffer.getvalue()


def migrations_csv_stream(*, migrations: QuerySet[Migration]) -> Iterator[str | bytes]:
    """The CSV export in blocks: a header, then a line per migration, oldest first."""
    if connections[migrations.db].vendor == "postgresql":
        yield _csv_line(CSV_HEADER, "\n")
        yield from _postgresql_copy_csv(_export_queryset(migrations, stats_in_sql=True))
        return
    yield _csv_line(CSV_HEADER)
    queryset = _export_queryset(migrations, stats_in_sql=False)
    stats_index = [name for name, _ in RECORD_COLUMNS].index("completed_stats")
    no_stats = [None] * len(JOB_STAT_KEYS)
    decode = json.JSONDecoder().decode
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=CSV_LINE_END)
    for rows in _raw_chunks(queryset):
        lines = []
        for row in rows:
            raw = row[stats_index]
            stats = decode(raw) if raw and raw != "null" else None
            if stats:
                flat = [formula_safe(stats.get(key)) for key in JOB_STAT_KEYS]
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
    """The rows as CSV written by PostgreSQL (COPY: psycopg quotes the parameters in)."""
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


_json_string = json.encoder.encode_basestring  # the C version: quotes and escapes


def _json_value_encoder(kind: str):
    """How a raw column value becomes JSON text (times, UUIDs and JSON already text)."""
    if kind == "JSONField":
        return lambda v: "null" if v is None else v
    if kind == "BooleanField":
        return lambda v: v  # the database made it true or false
    if kind in ("CharField", "TextField", "DateTimeField", "UUIDField", ""):
        return lambda v: "null" if v is None else _json_string(v)
    return lambda v: "null" if v is None else str(v)  # numbers


def migrations_json_stream(*, migrations: QuerySet[Migration], scope: dict) -> Iterator[str]:
    """The JSON export, {"scope": ..., "migrations": [record, ...]}, one block per chunk."""
    columns = [
        (_json_string(name) + ":", _json_value_encoder(_kind(name))) for name, _ in RECORD_COLUMNS
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
