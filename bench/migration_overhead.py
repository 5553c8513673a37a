"""Benchmark: what the portal adds to a real live migration, end to end, against libvirt.

Two lab hosts of its own (127.0.0.70-71), the web tier and a task worker; the guest
migrates back and forth over tcp, then ssh, by plain `virsh migrate --live --p2p` and by
the API. Overhead = `finished_at` - POST sent - libvirt's `time_elapsed`.

Run as root:  .venv/bin/python bench/migration_overhead.py [--rounds 3] [--memory-mib 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var-bench-migration"
os.environ["PORTAL_DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
if not os.environ.get("DATABASE_URL"):
    DATA_DIR.mkdir(exist_ok=True)
    # A scratch database each run: records of an earlier (interrupted) run must not count.
    for stale in DATA_DIR.glob("bench.sqlite3*"):
        stale.unlink()
    os.environ["DATABASE_URL"] = f"sqlite:///{DATA_DIR / 'bench.sqlite3'}"
sys.path.insert(0, str(ROOT))
from bench.common import lab_hosts_register, setup_django  # noqa: E402

setup_django()

import requests  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from audit.services import Actor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.access import ssh_services  # noqa: E402
from hosts.access.peer_services import peer_uri  # noqa: E402
from hosts.models import Host  # noqa: E402
from lab import domains, layout, lifecycle, machines  # noqa: E402
from migrations_app.models import Migration  # noqa: E402
from tests.processes import PortalServer, Workers, free_port  # noqa: E402
from vms.services import host_refresh  # noqa: E402

TARGET_MS = {"tcp": 300, "ssh": 500}
POLL_S = 0.05


def lab_config(memory_mib: int, fill_mib: int) -> layout.LabConfig:
    return layout.LabConfig(
        root=DATA_DIR / "lab",
        image_cache=Path(os.environ.get("BENCH_IMAGE_CACHE", ROOT / "var" / "guest-images")),
        first_address="127.0.0.70",
        name_prefix="bench",
        guest_memory_mib=memory_mib,
        guest_fill_mib=fill_mib,
        guest_dirty_mib_s=16,
    )


@dataclass
class PortalRun:
    direction: str
    wall_s: float  # finished_at - POST sent
    seen_s: float  # POST sent -> the poll saw `succeeded`
    libvirt_ms: int  # time_elapsed as the engine recorded it
    downtime_ms: int
    phases: dict[str, float]

    @property
    def overhead_ms(self) -> float:
        return self.wall_s * 1000 - self.libvirt_ms


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str) -> dict:
        response = self.session.get(self.base + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> dict:
        response = self.session.post(self.base + path, json=body, timeout=30)
        if response.status_code >= 400:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:400]}")
        return response.json()


def where(hosts: list[layout.LabHost], uuid: str) -> layout.LabHost:
    for host in hosts:
        if machines.virsh(host, "domstate", uuid, check=False).stdout.strip() == "running":
            return host
    raise RuntimeError("the guest runs nowhere")


def inventory_sync(actor: Actor) -> None:
    for host in Host.objects.all():
        host_refresh(host=host, actor=actor)


@dataclass
class VirshRun:
    wall_s: float
    libvirt_ms: int  # time_elapsed of the completed job, read from the destination

    @property
    def overhead_ms(self) -> float:
        return self.wall_s * 1000 - self.libvirt_ms


def virsh_round(hosts: list[layout.LabHost], uuid: str) -> VirshRun:
    """libvirt alone: virsh with the portal's URIs (same transport and keys), peer-to-peer."""
    lab_source = where(hosts, uuid)
    source = Host.objects.get(address=lab_source.address)
    destination = Host.objects.exclude(pk=source.pk).get()
    command = ["virsh", "-q", "-c", source.connection_uri, "migrate", "--live", "--p2p"]
    command += ["--persistent", "--undefinesource", uuid, peer_uri(source, destination)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    jobinfo = ["virsh", "-c", destination.connection_uri, "domjobinfo", uuid, "--completed"]
    jobinfo += ["--keep-completed", "--rawstats"]
    info = subprocess.run(jobinfo, check=True, capture_output=True, text=True, timeout=60).stdout
    elapsed = next(
        int(line.split(":", 1)[1])
        for line in info.splitlines()
        if line.strip().startswith("time_elapsed:")
    )
    return VirshRun(wall, elapsed)


def phases(migration_id: int) -> dict[str, float]:
    """Where the portal's time went, from the audit events the engine writes (ms)."""
    at = {
        e.event_type: e.occurred_at
        for e in AuditEvent.objects.filter(
            target_type="migrations_app.migration", target_id=str(migration_id)
        )
    }
    migration = Migration.objects.get(pk=migration_id)

    def ms(a: str, b: str) -> float:
        return (at[b] - at[a]).total_seconds() * 1000

    return {
        "queue+claim": ms("migration.requested", "migration.checking"),
        "pre-checks": ms("migration.checking", "migration.started"),
        "libvirt call - elapsed": ms("migration.started", "migration.completing")
        - (migration.total_time_ms or 0),
        "completion": ms("migration.completing", "migration.succeeded"),
    }


def portal_round(api: Api, hosts: list[layout.LabHost], uuid: str) -> PortalRun:
    lab_source = where(hosts, uuid)
    source = Host.objects.get(address=lab_source.address)
    destination = Host.objects.exclude(pk=source.pk).get()
    sent_at = time.time()
    started = time.monotonic()
    record = api.post(
        f"/api/vms/{uuid}/migrate/", {"remote_host": destination.name, "delete_source": True}
    )
    path = f"/api/migrations/{record['id']}/"
    while record["status"] not in ("succeeded", "failed", "cancelled", "needs_attention"):
        time.sleep(POLL_S)
        record = api.get(path)
    seen = time.monotonic() - started
    if record["status"] != "succeeded":
        raise RuntimeError(f"migration {record['id']} {record['status']}: {record['error']}")
    finished = datetime.fromisoformat(record["finished_at"].replace("Z", "+00:00")).timestamp()
    # The inventory sync follows `succeeded`; the next POST names the VM's new host.
    deadline = time.monotonic() + 30
    while api.get(f"/api/vms/{uuid}/")["host"] != destination.name:
        if time.monotonic() > deadline:
            raise RuntimeError("the inventory did not follow the VM")
        time.sleep(POLL_S)
    return PortalRun(
        direction=f"{source.name}->{destination.name}",
        wall_s=finished - sent_at,
        seen_s=seen,
        libvirt_ms=int(record["total_time_ms"] or 0),
        downtime_ms=int(record["downtime_ms"] or 0),
        phases=phases(record["id"]),
    )


def switch_to_ssh(hosts: list[layout.LabHost], actor: Actor) -> None:
    for lab_host in hosts:
        host = Host.objects.get(address=lab_host.address)
        host = host_services.host_update(
            host=host, actor=actor, transport="ssh", ssh_user=lab_host.ssh_user, port=None
        )
        ssh_services.host_ssh_access_set_up(
            host=host, user=lab_host.ssh_user, password=lab_host.ssh_password, actor=actor
        )
    inventory_sync(actor)


def measure(api, hosts, uuid, rounds: int, actor: Actor) -> tuple[list, list, list]:
    """Warm-up, then `rounds` x (virsh and portal there and back), interleaved (same load)."""
    warmup = [portal_round(api, hosts, uuid) for _ in range(4)]
    baseline: list[VirshRun] = []
    portal: list[PortalRun] = []
    for _ in range(rounds):
        baseline += [virsh_round(hosts, uuid), virsh_round(hosts, uuid)]
        inventory_sync(actor)
        portal += [portal_round(api, hosts, uuid), portal_round(api, hosts, uuid)]
    return warmup, baseline, portal


def report(transport: str, warmup: list, baseline: list, portal: list) -> None:
    target = TARGET_MS[transport]
    print(f"\n== over {transport} (target: overhead <= {target} ms) ==")
    print(f"{'':44}{'median':>8}{'max':>8}")

    def row(name: str, values: list[float]) -> None:
        print(f"{name:44}{statistics.median(values):8.0f}{max(values):8.0f}")

    row("virsh migrate wall ms", [b.wall_s * 1000 for b in baseline])
    row("virsh: libvirt time_elapsed ms", [b.libvirt_ms for b in baseline])
    row("virsh: wall - time_elapsed ms", [b.overhead_ms for b in baseline])
    row("portal POST->succeeded ms", [p.wall_s * 1000 for p in portal])
    row("portal POST->client saw it (50 ms poll) ms", [p.seen_s * 1000 for p in portal])
    row("portal: libvirt time_elapsed ms", [p.libvirt_ms for p in portal])
    row("portal: overhead (POST->succeeded - elapsed)", [p.overhead_ms for p in portal])
    for name in portal[0].phases:
        row(f"  of which {name} ms", [p.phases[name] for p in portal])
    row("libvirt downtime ms", [p.downtime_ms for p in portal])
    for p in portal:
        print(
            f"  {p.direction:18} POST->succeeded {p.wall_s * 1000:6.0f} ms, libvirt "
            f"{p.libvirt_ms:5d} ms, overhead {p.overhead_ms:5.0f} ms"
        )
    for p in warmup:
        print(f"  warm-up {p.direction:18} POST->succeeded {p.wall_s * 1000:6.0f} ms, "
              f"overhead {p.overhead_ms:5.0f} ms")  # fmt: skip
    worst = max(p.overhead_ms for p in portal)
    median = statistics.median(p.overhead_ms for p in portal)
    verdict = "meets" if worst <= target else ("median meets" if median <= target else "misses")
    print(f"overhead vs target {target} ms: median {median:.0f}, max {worst:.0f}: {verdict}")
    beyond = median - statistics.median(b.overhead_ms for b in baseline)
    print(f"overhead beyond virsh's own (medians): {beyond:.0f} ms")
    ratio = statistics.median(p.wall_s for p in portal) / statistics.median(
        b.wall_s for b in baseline
    )
    print(f"ratio portal POST->succeeded / virsh migrate wall (medians): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="round trips per method")
    parser.add_argument("--memory-mib", type=int, default=256)
    parser.add_argument("--fill-mib", type=int, default=64)
    parser.add_argument("--transports", default="tcp,ssh")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    get_broker().purge_queue()
    config = lab_config(args.memory_mib, args.fill_mib)
    hosts = lifecycle.up(config, hosts=2)
    web = PortalServer(DATA_DIR / "web.log", free_port())
    workers = Workers(DATA_DIR / "workers.log")
    try:
        domains.wait_for_console(config, timeout=180)
        actor = Actor.system("bench")
        lab_hosts_register(actor, config, hosts)
        inventory_sync(actor)
        user = get_user_model().objects.filter(username="bench").first()
        if user is None:
            user = get_user_model().objects.create_superuser("bench", "", None)
        token, _ = Token.objects.get_or_create(user=user)
        uuid = machines.virsh(where_any(hosts), "domuuid", layout.LINUX_VM_NAME).stdout.strip()
        web.start()
        workers.start()
        web.wait_until_serving(120)
        api = Api(web.url, token.key)
        results = {}
        for transport in args.transports.split(","):
            if transport == "ssh":
                switch_to_ssh(hosts, actor)
            results[transport] = measure(api, hosts, uuid, args.rounds, actor)
    finally:
        web.stop()
        workers.stop()
        get_broker().purge_queue()
        if not args.keep_lab:
            lifecycle.down(config)

    print(
        f"guest: {args.memory_mib} MiB RAM, {args.fill_mib} MiB filled, 16 MiB/s dirtied; "
        f"TCG; {args.rounds} round trips per method and transport; web tier 2 workers, "
        f"task workers 2; load average at the end {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    for transport, (warmup, baseline, portal) in results.items():
        report(transport, warmup, baseline, portal)


def where_any(hosts: list[layout.LabHost]) -> layout.LabHost:
    for host in hosts:
        if machines.virsh(host, "domuuid", layout.LINUX_VM_NAME, check=False).returncode == 0:
            return host
    raise RuntimeError(f"{layout.LINUX_VM_NAME} is on no lab host")


if __name__ == "__main__":
    main()
