"""Benchmark of the audit log and the migration reports (not part of the test suite).

Against naive baselines in the same run: the yearly report summary, the streamed CSV
export and audit log pages, through Django's test client in-process.

    PORTAL_DATA_DIR=var-bench/sqlite .venv/bin/python bench/audit_bench.py
    PORTAL_DATA_DIR=var-bench/pg DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_audit \\
        .venv/bin/python bench/audit_bench.py

bench/run_audit_bench.sh runs both.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import statistics
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, timedelta
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import percentile, seed_history, setup_django  # noqa: E402

setup_django()

from asgiref.sync import async_to_sync  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.http import QueryDict  # noqa: E402
from django.test import AsyncClient, Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from audit.selectors import _cursor_encode  # noqa: E402
from migrations_app.models import Migration  # noqa: E402
from migrations_app.report_exports import CSV_HEADER, JOB_STAT_KEYS, RECORD_COLUMNS  # noqa: E402
from migrations_app.reports import migration_report_build  # noqa: E402
from migrations_app.selectors import migrations_for_report  # noqa: E402


def _rss_peak_reset() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Peak:
    """Peak memory growth of a block: Python allocations (tracemalloc) and process RSS."""

    def __enter__(self) -> Peak:
        gc.collect()
        _rss_peak_reset()
        self.rss_before = _rss_kib("VmRSS")
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.py_before = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc) -> None:
        self.py_peak_mb = (tracemalloc.get_traced_memory()[1] - self.py_before) / 2**20
        tracemalloc.stop()
        self.rss_peak_mb = max(0, _rss_kib("VmHWM") - self.rss_before) / 1024


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--migrations", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--page-requests", type=int, default=300)
    parser.add_argument("--report-runs", type=int, default=5)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)

    results: dict = {"database": connection.vendor}
    print(f"== audit benchmark on {connection.vendor} ({connection.settings_dict['NAME']}) ==")
    if Migration.objects.count() < args.migrations:
        if Migration.objects.exists() or AuditEvent.objects.exists():
            sys.exit("The bench database has a partial history: start from an empty one.")
        started = time.perf_counter()
        print(seed_history(migrations=args.migrations, events=args.events, days=365).strip())
        results["seed_s"] = time.perf_counter() - started
        print(f"seeded in {results['seed_s']:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # planner statistics, also for indexes added since seeding
    results["migrations"] = Migration.objects.count()
    results["audit_events"] = AuditEvent.objects.count()
    print(f"{results['migrations']} migrations, {results['audit_events']} audit events")

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)

    _bench_report(results, args.report_runs)
    _bench_csv(results, client, user)
    _bench_audit_pages(results, client, args.page_requests)

    out = Path(settings.DATA_DIR) / f"audit-bench-{connection.vendor}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out}")


def _year_params():
    now = timezone.now()
    query = QueryDict(mutable=True)
    query["since"] = (now - timedelta(days=366)).isoformat()
    query["until"] = now.isoformat()
    return query


def _naive_report(queryset) -> dict:
    """The baseline: every row into Python, then the same figures computed there."""
    columns = ["status", "live", "total_time_ms", "downtime_ms", "transferred_bytes"]
    rows = list(queryset.values_list(*columns, "source__name", "destination__name", "created_at"))
    durations = sorted(r[2] for r in rows if r[0] == "succeeded" and r[2] is not None)
    downtimes = sorted(r[3] for r in rows if r[0] == "succeeded" and r[3] is not None)
    outcomes = Counter(r[0] for r in rows)
    hosts: dict = defaultdict(Counter)
    days: dict = defaultdict(Counter)
    for r in rows:
        hosts[r[5]]["out"] += 1
        hosts[r[6]]["in"] += 1
        days[r[7].astimezone(UTC).date()][r[0]] += 1
    return {
        "count": len(rows),
        "outcomes": outcomes,
        "duration_p50": statistics.median(durations),
        "duration_p95": statistics.quantiles(durations, n=20, method="inclusive")[18],
        "downtime_p95": statistics.quantiles(downtimes, n=20, method="inclusive")[18],
        "transferred": sum(r[4] or 0 for r in rows),
        "hosts": hosts,
        "days": days,
    }


def _bench_report(results: dict, runs: int) -> None:
    def build() -> dict:
        migrations, _ = migrations_for_report(params=_year_params())
        return migration_report_build(migrations=migrations)

    report = build()  # warm-up
    times = _timed(build, runs)
    migrations, _ = migrations_for_report(params=_year_params())
    naive = _naive_report(migrations)
    naive_times = _timed(lambda: _naive_report(migrations), max(1, runs // 2))
    assert report["count"] == naive["count"], (report["count"], naive["count"])
    assert abs(report["duration_ms"]["p95"] - naive["duration_p95"]) < 1e-6
    assert abs(report["downtime_ms"]["p95"] - naive["downtime_p95"]) < 1e-6
    with Peak() as peak:
        build()
    with Peak() as naive_peak:
        _naive_report(migrations)
    median, naive_median = statistics.median(times), statistics.median(naive_times)
    results["report"] = {
        "peak_py_mb": peak.py_peak_mb,
        "naive_peak_py_mb": naive_peak.py_peak_mb,
        "rows": report["count"],
        "median_s": median,
        "max_s": max(times),
        "naive_python_median_s": naive_median,
        "speedup": naive_median / median,
        "percentile_method": report["percentile_method"],
    }
    print(
        f"\n[report summary, one year, {report['count']} migrations]\n"
        f"  SQL aggregation : median {_ms(median)}, max {_ms(max(times))} over {runs} runs,"
        f" peak memory growth {peak.py_peak_mb:.1f} MiB\n"
        f"  naive Python    : median {_ms(naive_median)}  -> {naive_median / median:.1f}x the time,"
        f" peak memory growth {naive_peak.py_peak_mb:.1f} MiB\n"
        f"  percentiles     : {report['percentile_method']} (checked equal to Python's)"
    )


def _naive_csv(queryset) -> bytes:
    """The baseline: every row in a list, the whole file in memory, then sent."""
    rows = list(queryset.order_by("created_at", "id").values_list(*[c for _, c in RECORD_COLUMNS]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    stats_index = [n for n, _ in RECORD_COLUMNS].index("completed_stats")
    for row in rows:
        stats = row[stats_index] or {}
        writer.writerow([*row, *(stats.get(k) for k in JOB_STAT_KEYS)])
    return buffer.getvalue().encode()


def _bench_csv(results: dict, client, user) -> None:
    query = _year_params().urlencode()
    url = f"/api/reports/migrations/export.csv?{query}"

    def streamed() -> tuple[int, int]:
        response = client.get(url)
        assert response.status_code == 200
        size = lines = 0
        for block in response.streaming_content:
            size += len(block)
            lines += block.count(b"\n")
        return size, lines

    size, lines = streamed()  # warm-up
    (elapsed,) = _timed(streamed, 1)
    with Peak() as peak:
        streamed()

    migrations, _ = migrations_for_report(params=_year_params())
    (naive_elapsed,) = _timed(lambda: _naive_csv(migrations), 1)
    with Peak() as naive_peak:
        body = _naive_csv(migrations)
        naive_size = len(body)
        del body

    async def through_asgi() -> int:
        async_client = AsyncClient()
        await async_client.aforce_login(user)
        response = await async_client.get(url)
        total = 0
        async for block in response:
            total += len(block)
        return total

    started = time.perf_counter()
    asgi_size = async_to_sync(through_asgi)()
    asgi_elapsed = time.perf_counter() - started
    with Peak() as asgi_peak:
        async_to_sync(through_asgi)()

    json_url = f"/api/reports/migrations/export.json?{query}"

    def streamed_json() -> int:
        response = client.get(json_url)
        assert response.status_code == 200
        return sum(len(block) for block in response.streaming_content)

    (json_elapsed,) = _timed(streamed_json, 1)
    with Peak() as json_peak:
        json_size = streamed_json()

    results["json"] = {"bytes": json_size, "streamed_s": json_elapsed}
    results["json"]["streamed_peak_py_mb"] = json_peak.py_peak_mb
    results["csv"] = {
        "rows": lines - 1,
        "bytes": size,
        "streamed_s": elapsed,
        "streamed_peak_py_mb": peak.py_peak_mb,
        "streamed_peak_rss_mb": peak.rss_peak_mb,
        "asgi_s": asgi_elapsed,
        "asgi_peak_py_mb": asgi_peak.py_peak_mb,
        "asgi_peak_rss_mb": asgi_peak.rss_peak_mb,
        "naive_s": naive_elapsed,
        "naive_peak_py_mb": naive_peak.py_peak_mb,
        "naive_peak_rss_mb": naive_peak.rss_peak_mb,
    }
    assert asgi_size == size
    print(
        f"\n[CSV export, {lines - 1} rows, {size / 2**20:.1f} MiB]\n"
        f"  streamed (WSGI) : {elapsed:.2f} s, peak growth {peak.py_peak_mb:.1f} MiB Python"
        f" / {peak.rss_peak_mb:.1f} MiB RSS\n"
        f"  streamed (ASGI) : {asgi_elapsed:.2f} s, peak growth {asgi_peak.py_peak_mb:.1f} MiB"
        f" Python / {asgi_peak.rss_peak_mb:.1f} MiB RSS\n"
        f"  naive list      : {naive_elapsed:.2f} s, peak growth {naive_peak.py_peak_mb:.1f} MiB"
        f" Python / {naive_peak.rss_peak_mb:.1f} MiB RSS ({naive_size / 2**20:.1f} MiB file)"
        f"  -> {naive_peak.py_peak_mb / max(peak.py_peak_mb, 0.01):.0f}x the streamed peak\n"
        f"  JSON export     : {json_elapsed:.2f} s, peak growth {json_peak.py_peak_mb:.1f} MiB"
        f" Python ({json_size / 2**20:.1f} MiB)"
    )


def _bench_audit_pages(results: dict, client, requests: int) -> None:
    middle = AuditEvent.objects.order_by("id")[AuditEvent.objects.count() // 2]
    busy_host = AuditEvent.objects.exclude(host_name="").values_list("host_name", flat=True).first()
    vm_name = AuditEvent.objects.exclude(vm_name="").values_list("vm_name", flat=True).first()
    at = middle.occurred_at

    def url(path: str, **params) -> str:
        return f"{path}?{urlencode(params)}" if params else path

    def api_deep_page() -> str:
        """The API's second page below `middle` (a cursor half-way down the log)."""
        return client.get(url("/api/audit/", until=at.isoformat())).json()["next"]

    cases = {
        "API first page": url("/api/audit/"),
        "API deep page (cursor)": api_deep_page(),
        "API event_type=auth.login_failed": url("/api/audit/", event_type="auth.login_failed"),
        "API event_type=migration.*": url("/api/audit/", event_type="migration.*"),
        f"API host={busy_host}": url("/api/audit/", host=busy_host),
        f"API vm={vm_name}": url("/api/audit/", vm=vm_name),
        "API actor=ops-bob": url("/api/audit/", actor="ops-bob"),
        "API 30-day range": url(
            "/api/audit/", since=(at - timedelta(days=30)).isoformat(), until=at.isoformat()
        ),
        "page first": url("/audit/"),
        "page deep (cursor)": url("/audit/", cursor=_cursor_encode(middle)),
        f"page host={busy_host}&event_type=migration.failed": url(
            "/audit/", host=busy_host, event_type="migration.failed"
        ),
    }
    results["audit_pages"] = {}
    print(f"\n[audit log pages, {requests} requests each, 50 events per page]")
    worst = 0.0
    for name, case_url in cases.items():
        response = client.get(case_url)
        assert response.status_code == 200, (case_url, response.status_code)
        times = _timed(lambda case_url=case_url: client.get(case_url), requests)
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        worst = max(worst, p99)
        results["audit_pages"][name] = {"p50_s": p50, "p99_s": p99}
        print(f"  {name:<55} p50 {_ms(p50):>9}  p99 {_ms(p99):>9}")

    # Baseline: OFFSET pagination with a COUNT, as PageNumberPagination would do it.
    total = AuditEvent.objects.count()

    def offset_page() -> None:
        AuditEvent.objects.count()
        list(AuditEvent.objects.order_by("-occurred_at", "-id")[total // 2 : total // 2 + 50])

    naive = _timed(offset_page, max(20, requests // 10))
    naive_p99 = percentile(naive, 0.99)
    deep = results["audit_pages"]["API deep page (cursor)"]["p99_s"]
    results["audit_pages"]["worst_p99_s"] = worst
    results["audit_pages"]["naive_offset_count_p99_s"] = naive_p99
    print(
        f"  worst p99 {_ms(worst)}; baseline OFFSET+COUNT at the same depth (queries only): "
        f"p99 {_ms(naive_p99)} -> {naive_p99 / deep:.0f}x the keyset API page"
    )


if __name__ == "__main__":
    main()
