"""Benchmark: how fast a change made with `virsh` shows in the portal, with the hosts'
event listeners and with polling alone (the baseline, measured in the same run), and
what listening costs.

A lab of its own (default 10 hosts x 10 small diskless guests, 127.0.0.100 up), the web
tier (gunicorn + uvicorn, 2 workers) and `manage.py listen_hosts`. Each round suspends or
resumes a guest with virsh and measures, from the moment virsh is started:
- until GET /api/vms/?search=<name> (polled every 20 ms) shows the new state;
- until a websocket on /ws/inventory/ (through the web tier) receives it.
The baseline runs the same rounds with the listeners stopped and the safety-net poll
(`listeners.tasks.poll_hosts`, what django-q2 runs) at its configured interval.
Also: the listener process's CPU over an idle minute, and one full poll's time and CPU.

Run as root:  .venv/bin/python bench/inventory_events.py [--hosts 10] [--vms 10]
    [--rounds 20] [--poll-rounds 4] [--poll-interval-s 60] [--keep-lab]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var-bench-inventory"
os.environ["PORTAL_DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/10")
if not os.environ.get("DATABASE_URL"):
    DATA_DIR.mkdir(exist_ok=True)
    for stale in DATA_DIR.glob("bench.sqlite3*"):
        stale.unlink()
    os.environ["DATABASE_URL"] = f"sqlite:///{DATA_DIR / 'bench.sqlite3'}"
sys.path.insert(0, str(ROOT))
from bench.common import percentile, setup_django  # noqa: E402

setup_django()

import requests  # noqa: E402
import websockets  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from audit.services import Actor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.models import Host  # noqa: E402
from lab import layout, lifecycle, machines  # noqa: E402
from listeners.selectors import hosts_listened_ids  # noqa: E402
from listeners.tasks import poll_hosts  # noqa: E402
from tests.processes import Listeners, PortalServer, free_port  # noqa: E402
from vms.models import VM  # noqa: E402

API_POLL_S = 0.02


def lab_config(vms: int) -> layout.LabConfig:
    return layout.LabConfig(
        root=DATA_DIR / "lab",
        image_cache=Path(os.environ.get("BENCH_IMAGE_CACHE", ROOT / "var" / "guest-images")),
        first_address="127.0.0.100",
        name_prefix="ibench",
        start_vms=False,
        extra_vms=vms,
    )


class Socket:
    """/ws/inventory/ through the web tier, logged in with a session cookie; messages
    are timestamped on arrival by a thread of their own."""

    def __init__(self, url: str, session_key: str) -> None:
        self.url = url
        self.cookie = f"sessionid={session_key}"
        self.messages: list[tuple[float, dict]] = []
        self.ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()
        if not self.ready.wait(30):
            raise RuntimeError("the inventory websocket did not open")

    async def _run(self) -> None:
        async with websockets.connect(
            self.url, additional_headers={"Cookie": self.cookie}, origin="http://127.0.0.1"
        ) as socket:
            self.ready.set()
            try:
                async for raw in socket:
                    self.messages.append((time.monotonic(), json.loads(raw)))
            except websockets.ConnectionClosed:
                pass  # the web tier stops at the end

    def seen(self, uuid: str, host: str, state: str, since: float) -> float | None:
        for at, message in list(self.messages):
            vm = message["vm"]
            if at >= since and vm["uuid"] == uuid and message["host"] == host:
                if vm["state"] == state:
                    return at
        return None


def api_shows(session: requests.Session, base: str, name: str, host: str, state: str) -> bool:
    rows = session.get(f"{base}/api/vms/", params={"search": name}, timeout=10).json()["results"]
    return any(row["host"] == host and row["state"] == state for row in rows)


def one_round(guests, session, base, socket, *, timeout: float) -> tuple[float, float | None]:
    """Suspend or resume one guest; (API latency, websocket latency or None), in s."""
    host, name, uuid = random.choice(guests)
    state = VM.objects.get(host__name=host.name, uuid=uuid).state
    command, target = ("suspend", "paused") if state == "running" else ("resume", "running")
    started = time.monotonic()
    machines.virsh(host, command, name)
    deadline = started + timeout
    while not api_shows(session, base, name, host.name, target):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} on {host.name} never showed {target}")
        time.sleep(API_POLL_S)
    api_s = time.monotonic() - started
    if socket is None:
        return api_s, None
    while (seen := socket.seen(uuid, host.name, target, started)) is None:
        if time.monotonic() > deadline:
            return api_s, None
        time.sleep(API_POLL_S)
    return api_s, seen - started


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (/proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:46} (none)"
    return (
        f"{label:46} p50 {percentile(values, 0.5) * 1000:7.0f} ms   "
        f"p95 {percentile(values, 0.95) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms"
        f"   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--vms", type=int, default=10, help="small guests per host")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--poll-rounds", type=int, default=4)
    parser.add_argument("--poll-interval-s", type=float, default=60.0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    config = lab_config(args.vms)
    started = time.monotonic()
    lab_hosts = lifecycle.up(config, hosts=args.hosts)
    print(f"lab: {args.hosts} hosts x {args.vms} guests up in {time.monotonic() - started:.0f} s")
    web = PortalServer(DATA_DIR / "web.log", free_port())
    listeners = Listeners(DATA_DIR / "listeners.log")
    try:
        actor = Actor.system("bench")
        for lab_host in lab_hosts:
            if not Host.objects.filter(address=lab_host.address).exists():
                host_services.host_create(
                    actor=actor, name=lab_host.name, address=lab_host.address, transport="tcp"
                )
        poll_started, cpu_started = time.monotonic(), time.process_time()
        poll_hosts()
        full_poll_s = time.monotonic() - poll_started
        full_poll_cpu = time.process_time() - cpu_started
        guests = [
            (host, vm.name, str(vm.uuid))
            for host in lab_hosts
            for vm in VM.objects.filter(host__name=host.name, name__contains="-extra-")
        ]
        user = get_user_model().objects.filter(username="bench").first() or (
            get_user_model().objects.create_superuser("bench", "", None)
        )
        token, _ = Token.objects.get_or_create(user=user)
        session_store = SessionStore()
        session_store["_auth_user_id"] = str(user.pk)
        session_store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session_store["_auth_user_hash"] = user.get_session_auth_hash()
        session_store.create()
        web.start()
        web.wait_until_serving(120)
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token.key}"

        # Baseline: no listener, the safety-net poll at its interval, as django-q2 runs it.
        stop_polling = threading.Event()

        def poll_loop() -> None:
            while not stop_polling.wait(args.poll_interval_s):
                poll_hosts()

        poller = threading.Thread(target=poll_loop, daemon=True)
        poller.start()
        polled = []
        for _ in range(args.poll_rounds):
            time.sleep(random.uniform(0, args.poll_interval_s))  # any moment of the period
            timeout = args.poll_interval_s * 3
            polled.append(one_round(guests, api, web.url, None, timeout=timeout)[0])
        stop_polling.set()

        listeners.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(hosts_listened_ids()) == len(lab_hosts):
                break
            time.sleep(0.5)
        listening_after = time.monotonic() - (deadline - 120)
        socket = Socket(web.url.replace("http", "ws") + "/ws/inventory/", session_store.session_key)
        api_times, socket_times = [], []
        for _ in range(args.rounds):
            api_s, socket_s = one_round(guests, api, web.url, socket, timeout=30)
            api_times.append(api_s)
            socket_times.append(socket_s if socket_s is not None else float("inf"))
            time.sleep(0.2)

        idle_from = cpu_seconds(listeners.process.pid)
        time.sleep(args.idle_s)
        idle_cpu = cpu_seconds(listeners.process.pid) - idle_from
    finally:
        web.stop()
        listeners.stop()
        if not args.keep_lab:
            lifecycle.down(config)

    print(
        f"{args.hosts} hosts, {len(guests)} guests; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; latencies from virsh's start "
        f"(virsh itself included)"
    )
    print(f"listeners: every host listened {listening_after:.1f} s after the process started")
    print(summary("polling only: virsh -> API", polled))
    print(summary("listeners: virsh -> API", api_times))
    print(summary("listeners: virsh -> websocket message", socket_times))
    missed = sum(1 for value in socket_times if value == float("inf"))
    print(f"websocket messages missed (counted as infinite above): {missed}")
    ratio = statistics.median(polled) / statistics.median(api_times)
    print(f"ratio polling / listeners, virsh -> API (medians): {ratio:.0f}x")
    verdict = "meets" if percentile(api_times, 0.95) <= 1.0 else "misses"
    print(f"target p95 <= 1 s (API): {verdict}")
    print(
        f"listener process CPU at idle: {idle_cpu:.2f} s over {args.idle_s:.0f} s "
        f"({100 * idle_cpu / args.idle_s:.2f} % of one core)"
    )
    print(
        f"one safety-net poll of every host: {full_poll_s * 1000:.0f} ms wall, "
        f"{full_poll_cpu * 1000:.0f} ms CPU in the portal process"
    )


if __name__ == "__main__":
    main()
