"""CSV and JSON exports: one row per migration, every field, the completed statistics,
the report's filters; streamed under WSGI and ASGI."""

import csv
import io
import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.http import StreamingHttpResponse
from django.test import AsyncClient
from rest_framework.test import APIClient

from migrations_app import report_exports
from migrations_app.domain.lifecycle import FailureReason
from migrations_app.models import Migration
from migrations_app.report_exports import CSV_HEADER, JOB_STAT_KEYS
from tests.test_reports import END, START, _make_history

pytestmark = pytest.mark.django_db

RANGE = {"since": START.isoformat(), "until": (END + timedelta(seconds=1)).isoformat()}
CSV_URL = "/api/reports/migrations/export.csv"
JSON_URL = "/api/reports/migrations/export.json"


@pytest.fixture
def history():
    return _make_history(1_200, seed=21)


def _csv(response) -> list[dict]:
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def _iso(value) -> str:
    return value.isoformat(timespec="microseconds") if value is not None else ""


def test_csv_has_one_row_per_migration_with_every_field(api, history):
    response = api.get(CSV_URL, RANGE)
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="migrations_')
    rows = _csv(response)
    assert len(rows) == Migration.objects.count() == 1_200
    assert list(rows[0]) == CSV_HEADER
    field_columns = {f.attname for f in Migration._meta.concrete_fields}
    assert field_columns <= set(CSV_HEADER)  # every field of the record
    assert {f"stats.{k}" for k in JOB_STAT_KEYS} <= set(CSV_HEADER)
    by_id = {int(r["id"]): r for r in rows}
    assert len(by_id) == 1_200  # no migration twice
    created = [r["created_at"] for r in rows]
    assert created == sorted(created)  # oldest first
    for m in Migration.objects.select_related("source", "destination"):
        row = by_id[m.pk]
        assert row["vm_uuid"] == str(m.vm_uuid)
        assert row["vm_name"] == m.vm_name
        assert (row["source_id"], row["source"]) == (str(m.source_id), m.source.name)
        assert (row["destination_id"], row["destination"]) == (
            str(m.destination_id),
            m.destination.name,
        )
        assert row["requested_by_name"] == m.requested_by_name
        assert row["status"] == m.status
        assert row["live"] == ("true" if m.live else "false")
        assert row["created_at"] == _iso(m.created_at)
        assert row["finished_at"] == _iso(m.finished_at)
        assert row["error"] == m.error
        assert row["failure_reason"] == m.failure_reason
        assert row["max_downtime_ms"] == str(m.max_downtime_ms)
        for name in ("total_time_ms", "downtime_ms", "setup_time_ms", "transferred_bytes"):
            value = getattr(m, name)
            assert row[name] == ("" if value is None else str(value)), name
        stats = m.completed_stats
        if stats is None:
            assert row["completed_stats"] == ""
            assert row["stats.time_elapsed"] == ""
        else:
            assert json.loads(row["completed_stats"]) == stats  # every key, even unknown ones
            assert row["stats.time_elapsed"] == str(stats["time_elapsed"])
            assert row["stats.memory_iteration"] == str(stats["memory_iteration"])
            assert row["stats.success"] == "true"
            assert row["stats.disk_total"] == ""  # a key this record does not have
            downtime = stats["downtime"]
            assert row["stats.downtime"] == ("" if downtime is None else str(downtime))
        assert json.loads(row["checks"]) == m.checks


def test_csv_applies_the_report_filters(api, history):
    rows = _csv(api.get(CSV_URL, {**RANGE, "source": "h-a", "outcome": "failed"}))
    expected = Migration.objects.filter(source__name="h-a", status="failed")
    assert sorted(int(r["id"]) for r in rows) == sorted(expected.values_list("pk", flat=True))
    assert rows and {(r["source"], r["status"]) for r in rows} == {("h-a", "failed")}
    # Every failure says why, in the vocabulary's words.
    assert {r["failure_reason"] for r in rows} <= set(FailureReason.values)
    assert _csv(api.get(CSV_URL, {"since": "2000-01-01", "until": "2000-01-02"})) == []


def test_csv_is_streamed_in_blocks(api, history, monkeypatch):
    monkeypatch.setattr(report_exports, "EXPORT_CHUNK_ROWS", 500)  # SQLite: rows per block
    monkeypatch.setattr(report_exports, "EXPORT_BLOCK_BYTES", 100_000)  # PostgreSQL: bytes
    response = api.get(CSV_URL, RANGE)
    blocks = list(response.streaming_content)
    # The header, then blocks: never the whole file at once.
    # CRLF as RFC 4180 (a CR in a cell is then quoted); PostgreSQL's COPY ends lines in LF.
    assert blocks[0].decode() in (",".join(CSV_HEADER) + "\r\n", ",".join(CSV_HEADER) + "\n")
    assert len(blocks) >= 4
    assert all(len(b) < 300_000 for b in blocks)
    assert sum(b.count(b"\n") for b in blocks) == 1 + 1_200


def test_csv_under_asgi_is_an_async_stream_with_the_same_rows(admin_user, api, history):
    expected = b"".join(api.get(CSV_URL, RANGE).streaming_content)

    async def fetch():
        client = AsyncClient()
        await client.aforce_login(admin_user)
        response = await client.get(CSV_URL, RANGE)
        assert response.is_async  # Django would otherwise read it all into memory first
        return response.status_code, b"".join([chunk async for chunk in response])

    status, body = async_to_sync(fetch)()
    assert status == 200
    assert body == expected


def test_json_export_has_the_scope_and_every_record(api, history):
    response = api.get(JSON_URL, {**RANGE, "live": "false"})
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    body = json.loads(b"".join(response.streaming_content))
    assert body["scope"]["filters"] == {"live": "false"}
    expected = Migration.objects.filter(live=False)
    assert sorted(m["id"] for m in body["migrations"]) == sorted(
        expected.values_list("pk", flat=True)
    )
    record = next(m for m in body["migrations"] if m["completed_stats"])
    migration = Migration.objects.get(pk=record["id"])
    assert record["completed_stats"] == migration.completed_stats
    assert record["source"] == migration.source.name
    assert record["total_time_ms"] == migration.total_time_ms
    assert record["vm_uuid"] == str(migration.vm_uuid)
    assert record["live"] is False
    assert record["created_at"] == migration.created_at.isoformat(timespec="microseconds")
    assert record["finished_at"] == (_iso(migration.finished_at) or None)
    assert record["checks"] == migration.checks
    assert record["error"] == migration.error
    assert record["failure_reason"] == migration.failure_reason
    assert set(record) == {name for name, _ in report_exports.RECORD_COLUMNS}


def test_empty_json_export_is_valid_json(api):
    response = api.get(JSON_URL, {"since": "2000-01-01", "until": "2000-01-02"})
    assert json.loads(b"".join(response.streaming_content))["migrations"] == []


def test_exports_need_an_administrator_or_auditor(viewer_api):
    assert APIClient().get(CSV_URL).status_code == 401
    assert viewer_api.get(CSV_URL).status_code == 403
    assert viewer_api.get(JSON_URL).status_code == 403


def test_export_rejects_bad_filters(api):
    response = api.get(CSV_URL, {"outcome": "nope"})
    assert response.status_code == 400
    assert "outcome" in response.json()


# OWASP CSV injection: text a spreadsheet would run as a formula, as the guest or a user
# could name things (a VM's name comes from its libvirt definition).
FORMULAS = {
    "vm_name": '=HYPERLINK("http://x","y")',
    "requested_by_name": "@SUM(A1)",
    "error": "+cmd|' /C calc'!A0",
    "new_name": "-2+3",
    "claimed_by": "\tworker",
    "phase": "\r=1",
}


@pytest.fixture
def formulas():
    from hosts.models import Host

    source = Host.objects.create(name="=src", address="192.0.2.40")
    destination = Host.objects.create(name="dst-ok", address="192.0.2.41")
    return Migration.objects.create(
        **FORMULAS,
        vm_uuid="6f1c0a4e-0000-4000-8000-000000000001",
        source=source,
        destination=destination,
        status="failed",
        max_downtime_ms=500,
        timeout_s=600,
        total_time_ms=-5,  # a number stays a number, even negative
        completed_stats={"errmsg": "=1+1", "downtime": 12, "type": "-x", "data_total": -1},
    )


def test_csv_cells_that_start_like_a_formula_are_quoted(api, formulas):
    (row,) = _csv(api.get(CSV_URL))
    for column, value in FORMULAS.items():
        assert row[column] == "'" + value, column
    assert row["source"] == "'=src"
    assert row["destination"] == "dst-ok"  # nothing else changes
    assert row["status"] == "failed"
    assert row["total_time_ms"] == "-5"
    assert row["stats.errmsg"] == "'=1+1"
    assert row["stats.type"] == "'-x"
    assert (row["stats.downtime"], row["stats.data_total"]) == ("12", "-1")


def test_json_string_values_that_start_like_a_formula_are_quoted(api, formulas):
    body = json.loads(b"".join(api.get(JSON_URL).streaming_content))
    (record,) = body["migrations"]
    for column, value in FORMULAS.items():
        assert record[column] == "'" + value, column
    assert record["source"] == "'=src"
    assert record["destination"] == "dst-ok"
    assert record["total_time_ms"] == -5
