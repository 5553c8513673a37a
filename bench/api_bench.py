"""Benchmark of the REST API over HTTP against the production web tier (issue #12).

    make bench-api                       # or: .venv/bin/python bench/api_bench.py
    .venv/bin/python bench/api_bench.py --reuse --duration 5   # keep the seeded database

Seeds its own PostgreSQL database (no host is contacted), starts the web tier and
measures each endpoint with `wrk`, 16 clients then one, beside the baseline: the code at
--baseline-ref served by one daphne process, on the same data in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import ws_rate  # noqa: E402
from bench.common import PY, ROOT, seed_history, stop  # noqa: E402
from tests.processes import free_port  # noqa: E402

LUA = ROOT / "bench" / "api_bench.lua"

TARGET_RPS = 200.0
TARGET_P99_MS = 120.0
TARGET_ALONE_P99_MS = 20.0
# Main before the API work (issue #12, item 4): what the baseline serves.
BASELINE_REF = "6558e82"
DB = "apibench"  # --db


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    client_cpu: float  # the load generator's CPU time / wall time (1.0 = one core)
    server_cpu_ms: float  # the web tier's CPU time per request
    sessions_per_request: float  # PostgreSQL connections opened per request


def _run(cmd: list[str], env: dict, **kwargs) -> str:
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def seed(env: dict, db: str, args: argparse.Namespace) -> None:
    if db == "test":
        sys.exit("refusing to use the database 'test'")
    started = time.monotonic()
    pg = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *pg, "--if-exists", "--force", db], check=True)
    subprocess.run(["createdb", *pg, db], check=True)
    _run([PY, "manage.py", "migrate", "--noinput"], env)
    counts = {"hosts": args.hosts, "vms": args.vms, "migrations": args.migrations}
    print(seed_history(env, events=args.events, **counts).strip().splitlines()[-1])
    print(f"seeded in {time.monotonic() - started:.0f} s")


SETUP = """
import json, random, sys
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.models import Migration
from vms.models import VM

rng = random.Random(7)
# Loopback addresses where nothing listens (the seed's are examples); never contacted.
for i, host in enumerate(Host.objects.order_by("id")):
    Host.objects.filter(pk=host.pk).update(address=f"127.0.0.{200 + i}")
User = get_user_model()
user = User.objects.filter(username="bench-admin").first()
if user is None:
    user = User.objects.create_superuser("bench-admin", password=None)
token, _ = Token.objects.get_or_create(user=user)

def sample(values, n):
    values = list(values)
    return rng.sample(values, min(n, len(values)))

max_m = Migration.objects.order_by("-id").values_list("id", flat=True).first()
# The websocket bench follows this one: a final migration's socket closes after its state.
Migration.objects.filter(pk=max_m).update(status="running")
max_e = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
print(json.dumps({
    "token": token.key,
    "running_migration": max_m,
    "hosts": sorted(Host.objects.values_list("id", flat=True)),
    "vms": [str(u) for u in sample(VM.objects.values_list("uuid", flat=True), 200)],
    "migrations": [rng.randint(1, max_m) for _ in range(200)],
    "audit": [rng.randint(1, max_e) for _ in range(200)],
}))
"""


def endpoints(ids: dict) -> list[tuple[str, list[str]]]:
    return [
        ("GET /healthz", ["/healthz"]),
        ("GET /api/hosts/", ["/api/hosts/"]),
        ("GET /api/hosts/{id}/", [f"/api/hosts/{i}/" for i in ids["hosts"]]),
        ("GET /api/vms/", ["/api/vms/"]),
        ("GET /api/vms/{uuid}/", [f"/api/vms/{u}/" for u in ids["vms"]]),
        ("GET /api/migrations/", ["/api/migrations/"]),
        ("GET /api/migrations/{id}/", [f"/api/migrations/{i}/" for i in ids["migrations"]]),
        ("GET /api/audit/", ["/api/audit/"]),
        ("GET /api/audit/{id}/", [f"/api/audit/{i}/" for i in ids["audit"]]),
    ]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _tree(pid: int) -> list[int]:
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def _db_sessions(db: str) -> int:
    """Connections ever opened to the database (PostgreSQL's counter)."""
    query = f"SELECT sessions FROM pg_stat_database WHERE datname = '{db}'"
    for _attempt in range(20):  # the baseline may hold every connection for a while
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", query, "postgres"],
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            return int(out.stdout.strip())
        time.sleep(0.5)
    sys.exit(f"psql failed: {out.stderr}")


def wrk(base: str, paths: list[str], token: str, clients: int, duration: float, server: int):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(paths) + "\n")
    server_pids = _tree(server)
    server_before = _cpu_seconds(server_pids)
    sessions_before = _db_sessions(DB) if DB else 0
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *("wrk", "-t1", f"-c{clients}", f"-d{round(duration)}s", "--timeout", "10s"),
            *("-s", str(LUA), base, "--", f.name),
        ],
        env={**os.environ, "BENCH_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    server_cpu = _cpu_seconds(server_pids) - server_before
    sessions = _db_sessions(DB) - sessions_before if DB else 0
    os.unlink(f.name)
    line = next((x for x in out.splitlines() if x.startswith("WRK_RESULT ")), None)
    if status != 0 or line is None:
        sys.exit(f"wrk failed:\n{out}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    return Figures(
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        requests=r["requests"],
        errors=r["non_2xx"] + r["socket_errors"],
        client_cpu=(usage.ru_utime + usage.ru_stime) / wall,
        server_cpu_ms=1000 * server_cpu / max(1, r["requests"]),
        sessions_per_request=sessions / max(1, r["requests"]),
    )


def _wait_ready(base: str, proc: subprocess.Popen, token: str, path: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("the web server exited before it answered")
        try:
            request = urllib.request.Request(
                base + path, headers={"Authorization": f"Token {token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"the web server did not answer {path} within 60 s")


def measure(
    name: str, cmd: list[str], cwd: Path, env: dict, ids: dict, args, selected=None
) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    env = {**env, "PORTAL_WEB_BIND": f"127.0.0.1:{port}"}
    log = open(Path(env["PORTAL_DATA_DIR"]) / f"{name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    results = {}
    if selected is None:
        selected = [e for e in endpoints(ids) if args.only in e[0]]
        if args.steady:  # issue #24's endpoints only
            selected = [e for e in selected if e[0] in STEADY]
    try:
        for _label, paths in selected:
            _wait_ready(base, proc, ids["token"], paths[0])
        # Warm every worker: a few requests on every endpoint.
        for _label, paths in selected:
            wrk(base, paths, ids["token"], 8, 1, proc.pid)
        for label, paths in selected:
            many = wrk(base, paths, ids["token"], args.clients, args.duration, proc.pid)
            alone = wrk(base, paths, ids["token"], 1, args.duration_alone, proc.pid)
            results[label] = (many, alone)
            print(
                f"  {name:9} {label:28} {many.rps:7.1f} req/s  p50 {many.p50_ms:6.1f} ms  "
                f"p99 {many.p99_ms:6.1f} max {many.max_ms:6.1f} ms  "
                f"alone p50 {alone.p50_ms:4.1f} p99 {alone.p99_ms:5.1f} "
                f"max {alone.max_ms:5.1f} ms  "
                f"errors {many.errors + alone.errors}  server CPU {many.server_cpu_ms:.1f} "
                f"ms/req  wrk CPU {100 * many.client_cpu:.0f}%  "
                f"DB connections/req {many.sessions_per_request:.2f}",
                flush=True,
            )
        if name == "web" and args.steady:
            WEBSOCKET_RUNS.append(websocket_rate(base, env, ids, args, proc.pid))
    finally:
        stop(proc)
        log.close()
    return results


WEBSOCKET_RUNS: list[tuple[ws_rate.Rate, ws_rate.Rate]] = []


def websocket_rate(base: str, env: dict, ids: dict, args, server: int) -> tuple:
    """A migration's progress socket quiet, then while wrk loads GET /api/vms/."""
    return ws_rate.quiet_and_loaded(
        base.replace("http://", "ws://"),
        env,
        ROOT,
        ids["token"],
        ids["running_migration"],
        load=lambda seconds: wrk(base, ["/api/vms/"], ids["token"], args.clients, seconds, server),
        load_name=f"wrk -c{args.clients} on /api/vms/",
    )


def stalls_print(log: Path) -> None:
    """The web tier's stall-watch lines (portal/stall_watch.py) of the last measure."""
    stalls = [line for line in log.read_text().splitlines() if "event loop stalled" in line]
    print(f"  stall watch: {len(stalls)} stalls logged")
    for line in stalls[:20]:
        print("   ", line.split("portal.stall: ", 1)[-1][:1500])


def baseline_source(ref: str) -> Path:
    """The code at `ref` in a temporary folder outside the project, with the shared venv."""
    target = Path(tempfile.mkdtemp(prefix=f"apibench-baseline-{ref}-"))
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    (target / ".venv").symlink_to(ROOT / ".venv")
    # The old settings under ASGI kept every request's connection open until PostgreSQL
    # ran out: the baseline closes each at the end of its request (same cost).
    settings = target / "portal" / "settings.py"
    settings.write_text(settings.read_text().replace("conn_max_age=60", "conn_max_age=0"))
    return target


def _ratio(new: float, old: float) -> str:
    return f"{new / old:5.1f}x" if old and new else "    - "


def report(new: dict, old: dict | None, workers: int, load: tuple, ref: str) -> None:
    print()
    print(
        f"16 clients (wrk -c16): target >= {TARGET_RPS:.0f} req/s and p99 <= "
        f"{TARGET_P99_MS:.0f} ms; 1 client: target p99 <= {TARGET_ALONE_P99_MS:.0f} ms. "
        "'base' = the baseline, ratio = how many times better."
    )
    head = (
        f"{'endpoint':28} {'req/s':>6} {'base':>6} {'ratio':>6} | {'p50':>5} {'p99 ms':>6} "
        f"{'base':>7} {'ratio':>6} | {'alone p99':>9} {'base':>6} {'ratio':>6} | "
        f"{'CPU ms/req':>10} {'base':>5} | ok"
    )
    print(head)
    print("-" * len(head))
    all_ok = True
    nothing = Figures(0, 0, 0, 0, 0, 0, 0, 0, 0)
    for label, (many, alone) in new.items():
        base_many, base_alone = old[label] if old else (nothing, nothing)
        ok = (
            many.rps >= TARGET_RPS
            and many.p99_ms <= TARGET_P99_MS
            and alone.p99_ms <= TARGET_ALONE_P99_MS
            and many.errors + alone.errors == 0
            and many.requests > 0
            and alone.requests > 0
        )
        all_ok &= ok
        print(
            f"{label:28} {many.rps:6.1f} {base_many.rps:6.1f} {_ratio(many.rps, base_many.rps)} | "
            f"{many.p50_ms:5.1f} {many.p99_ms:6.1f} {base_many.p99_ms:7.1f} "
            f"{_ratio(base_many.p99_ms, many.p99_ms)} | {alone.p99_ms:9.1f} "
            f"{base_alone.p99_ms:6.1f} {_ratio(base_alone.p99_ms, alone.p99_ms)} | "
            f"{many.server_cpu_ms:10.1f} {base_many.server_cpu_ms:5.1f} | {'yes' if ok else 'NO'}"
        )
    print()
    print(
        f"web tier: {workers} uvicorn workers under gunicorn (scripts/web.sh), PostgreSQL "
        f"pool per worker; baseline: one daphne process serving the code at {ref} (main "
        "before issue #12 item 4; CONN_MAX_AGE 0, else it exhausts PostgreSQL's "
        "connections), same database, data and URLs."
    )
    sessions = max(m.sessions_per_request for m, _a in new.values())
    print(f"PostgreSQL connections opened per request: web tier at most {sessions:.2f}", end="")
    if old:
        base_sessions = min(m.sessions_per_request for m, _a in old.values())
        print(f", baseline at least {base_sessions:.2f}", end="")
    print()
    client = max(m.client_cpu for m, _a in new.values())
    print(f"load generator (wrk, one thread): at most {100 * client:.0f}% of one core")
    print("CPU ms/req: the web tier's processes only (not PostgreSQL), 16 clients")
    print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"all targets met: {'yes' if all_ok else 'NO'}")


# The floor (issue #24): a bare ASGI app under the same gunicorn settings and workers.
FLOOR_CMD = [
    *(str(ROOT / ".venv/bin/gunicorn"), "-c", "deploy/gunicorn.conf.py"),
    *("-k", "uvicorn_worker.UvicornWorker", "bench.hello_asgi:application"),
]
# Issue #24's targets: (clients, p99 ms, max ms) per endpoint.
STEADY = {
    "GET /healthz": [(16, 10.0, 50.0), (1, 2.0, None)],
    "GET /api/vms/": [(16, 120.0, 300.0)],
    "GET /api/migrations/": [(16, 120.0, 300.0)],
    "GET /api/hosts/": [(16, 120.0, 300.0)],
}


def _cell(f: Figures) -> str:
    return f"{f.p50_ms:6.1f} {f.p99_ms:6.1f} {f.max_ms:7.1f}"


def report_floor(runs: list[tuple[dict, dict]], profile: str) -> bool:
    """Each endpoint beside the floor measured in the same run; issue #24's targets."""
    print()
    print(
        f"against the floor ({profile}): bare ASGI app, same gunicorn settings and workers, "
        "same run; ratio = portal / floor"
    )
    head = (
        f"{'run':>3} {'endpoint':22} {'cl':>2} | {'p50':>6} {'p99':>6} {'max ms':>7} | "
        f"{'floor':>6} {'p99':>6} {'max':>7} | {'p99 x':>6} {'max x':>6} | {'req/s':>7} | target"
    )
    print(head)
    print("-" * len(head))
    all_ok = True
    for number, (floor, new) in enumerate(runs, 1):
        for label, (many, alone) in new.items():
            for clients, fig, base in ((16, many, floor[0]), (1, alone, floor[1])):
                target = next((t for t in STEADY.get(label, []) if t[0] == clients), None)
                verdict = "-"
                if target:
                    ok = fig.p99_ms <= target[1] and (target[2] is None or fig.max_ms <= target[2])
                    ok = ok and fig.errors == 0 and fig.requests > 0
                    all_ok &= ok
                    limit = f"p99<={target[1]:g}" + (f" max<={target[2]:g}" if target[2] else "")
                    verdict = f"{'yes' if ok else 'NO '} ({limit})"
                print(
                    f"{number:3} {label:22} {clients:2} | {_cell(fig)} | {_cell(base)} | "
                    f"{fig.p99_ms / max(base.p99_ms, 0.001):6.1f} "
                    f"{fig.max_ms / max(base.max_ms, 0.001):6.1f} | {fig.rps:7.1f} | {verdict}"
                )
    print(f"issue #24 targets met in every run ({profile}): {'yes' if all_ok else 'NO'}")
    return all_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="apibench")
    parser.add_argument("--data-dir", default=str(ROOT / "var-bench-api"))
    parser.add_argument("--reuse", action="store_true", help="keep the seeded database")
    parser.add_argument("--workers", type=int, default=None, help="PORTAL_WEB_WORKERS")
    parser.add_argument("--threads", type=int, default=None, help="PORTAL_WEB_HTTP_THREADS")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=int, default=8, help="s per endpoint, 16 clients")
    parser.add_argument("--duration-alone", type=int, default=4, help="s per endpoint, 1")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    parser.add_argument("--only", default="", help="measure the endpoints containing this")
    parser.add_argument(
        "--profile",
        choices=("postgres", "sqlite"),
        default="postgres",
        help="sqlite: the demo's default profile (its own data folder, private redis)",
    )
    parser.add_argument("--runs", type=int, default=1, help="floor + web tier, N times")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--steady", action="store_true", help="issue #24's endpoints only")
    parser.add_argument(
        "--stall-watch-ms",
        type=float,
        default=0,
        help="PORTAL_STALL_WATCH_MS in the web tier; its stall lines are printed",
    )
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--migrations", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=500_000)
    args = parser.parse_args()
    global DB
    DB = args.db if args.profile == "postgres" else ""
    if args.profile == "sqlite":
        args.no_baseline = True  # the baseline's daphne ran on PostgreSQL only
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk (scripts/install-system.sh)")

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ours = ("PORTAL_", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    if args.profile == "postgres":
        env.update(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{args.db}",
            REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
        )
    else:  # as `make demo`: SQLite and redis in the data folder
        subprocess.run(
            ["bash", "scripts/redis.sh", "start"],
            cwd=ROOT,
            env={**env, "PORTAL_DATA_DIR": str(data_dir)},
            check=True,
        )
    env.update(
        PORTAL_DATA_DIR=str(data_dir),
        PORTAL_HOST_NETWORKS="127.0.0.0/8",
        PORTAL_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    workers = args.workers or max(2, os.cpu_count() or 1)  # as deploy/gunicorn.conf.py
    env["PORTAL_WEB_WORKERS"] = str(workers)
    if args.threads:
        env["PORTAL_WEB_HTTP_THREADS"] = str(args.threads)
    if args.stall_watch_ms:
        env["PORTAL_STALL_WATCH_MS"] = str(args.stall_watch_ms)
    if not args.reuse and args.profile == "sqlite":
        (data_dir / "portal.sqlite3").unlink(missing_ok=True)
        _run([PY, "manage.py", "migrate", "--noinput"], env)
        counts = {"hosts": args.hosts, "vms": args.vms, "migrations": args.migrations}
        print(seed_history(env, events=args.events, **counts).strip().splitlines()[-1])
    elif not args.reuse:
        seed(env, args.db, args)
    else:
        _run([PY, "manage.py", "migrate", "--noinput"], env)
    ids = json.loads(_run([PY, "manage.py", "shell", "-c", SETUP], env).strip().splitlines()[-1])
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; measuring the web tier")
    runs = []
    for number in range(args.runs):
        floor = None
        if not args.no_floor:
            hello = [("GET / (floor)", ["/"])]
            floor = measure("floor", FLOOR_CMD, ROOT, env, ids, args, hello)["GET / (floor)"]
        new = measure("web", ["bash", "scripts/web.sh"], ROOT, env, ids, args)
        runs.append((floor, new))
        if args.stall_watch_ms:
            stalls_print(data_dir / "web.log")
        print(f"run {number + 1} of {args.runs} done", flush=True)
    old = None
    if not args.no_baseline:
        source = baseline_source(args.baseline_ref)
        daphne = [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", "{port}"]
        try:
            old = measure("baseline", [*daphne, "portal.asgi:application"], source, env, ids, args)
        finally:
            shutil.rmtree(source)
    report(new, old, workers, load, args.baseline_ref)
    if not args.no_floor:
        report_floor(runs, args.profile)
    if WEBSOCKET_RUNS:
        ws_rate.report(WEBSOCKET_RUNS)


if __name__ == "__main__":
    main()
