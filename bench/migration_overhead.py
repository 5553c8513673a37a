"""Benchmark: what the portal adds to a real live migration, against plain virsh.

Starts two lab hosts of its own (127.0.0.70-71, data folder var-bench-migration), then
migrates the filled Linux guest back and forth N times each way:
- baseline: `virsh migrate --live --p2p --persistent --undefinesource` (libvirt alone);
- portal: the engine as a worker runs it (pre-checks, 5 samples/s written to the
  database and published, completed statistics, inventory sync of both hosts).
Prints wall time per migration (median, max), libvirt's downtime and data moved, the
samples per second the portal recorded, and the portal/baseline ratio.

Run as root:  .venv/bin/python bench/migration_overhead.py [--rounds 3] [--memory-mib 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var-bench-migration"
os.environ.setdefault("PORTAL_DATA_DIR", str(DATA_DIR))
# A scratch database each run: records of an earlier (interrupted) run must not count.
for stale in DATA_DIR.glob("portal.sqlite3*"):
    stale.unlink()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.pop("DATABASE_URL", None)
# The request queues a task after commit; this run executes it in-process and purges
# the queue at the end, so any Redis will do.
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/3")
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402

from audit.services import Actor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.models import Host  # noqa: E402
from lab import core  # noqa: E402
from migrations_app.engine import migration_execute  # noqa: E402
from migrations_app.models import Migration  # noqa: E402
from migrations_app.options import MigrationOptions  # noqa: E402
from migrations_app.services import migration_request  # noqa: E402
from vms.models import VM  # noqa: E402
from vms.services import host_refresh_with_vms  # noqa: E402

MiB = 2**20


def lab_config(memory_mib: int, fill_mib: int) -> core.LabConfig:
    return core.LabConfig(
        root=DATA_DIR / "lab",
        image_cache=ROOT / "var" / "guest-images",
        first_address="127.0.0.70",
        name_prefix="bench",
        guest_memory_mib=memory_mib,
        guest_fill_mib=fill_mib,
        guest_dirty_mib_s=16,
    )


def where(hosts: list[core.LabHost], uuid: str) -> core.LabHost:
    for host in hosts:
        if core.virsh(host, "domstate", uuid, check=False).stdout.strip() == "running":
            return host
    raise RuntimeError("the guest runs nowhere")


def virsh_round(hosts: list[core.LabHost], uuid: str) -> float:
    source = where(hosts, uuid)
    destination = next(h for h in hosts if h.name != source.name)
    started = time.monotonic()
    core.virsh(
        source,
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        uuid,
        destination.libvirt_uri,
    )
    return time.monotonic() - started


def portal_round(hosts: list[core.LabHost], uuid: str, actor: Actor) -> tuple[float, Migration]:
    source = where(hosts, uuid)
    destination = next(h for h in hosts if h.name != source.name)
    vm = VM.objects.get(uuid=uuid, host__name=source.name)
    started = time.monotonic()
    migration = migration_request(
        vm=vm,
        destination=Host.objects.get(name=destination.name),
        options=MigrationOptions(delete_source=True),
        actor=actor,
    )
    status = migration_execute(migration_id=migration.pk)
    elapsed = time.monotonic() - started
    migration.refresh_from_db()
    if status != "succeeded":
        raise RuntimeError(f"migration failed: {migration.error}")
    return elapsed, migration


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="migrations per method")
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--fill-mib", type=int, default=300)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    config = lab_config(args.memory_mib, args.fill_mib)
    hosts = core.up(config, hosts=2)
    try:
        core.wait_for_console(config, timeout=180)
        actor = Actor.system("bench")
        for lab_host in hosts:
            host = Host.objects.filter(name=lab_host.name).first() or host_services.host_create(
                actor=actor,
                name=lab_host.name,
                address=lab_host.address,
                transport="tcp",
                shared_storage_paths=[str(core.shared_storage_dir(config))],
            )
            host_refresh_with_vms(host=host, actor=actor)
        uuid = core.virsh(where_any(hosts), "domuuid", core.LINUX_VM_NAME).stdout.strip()

        baseline = [virsh_round(hosts, uuid) for _ in range(args.rounds)]
        for host in Host.objects.all():
            host_refresh_with_vms(host=host, actor=actor)
        portal = [portal_round(hosts, uuid, actor) for _ in range(args.rounds)]
    finally:
        get_broker().purge_queue()
        if not args.keep_lab:
            core.down(config)

    walls = [wall for wall, _ in portal]
    records = [m for _, m in portal]
    rates = []
    for m in records:
        taken = [s.taken_at for s in m.samples.exclude(phase="done").order_by("id")]
        if len(taken) > 1:
            span = (taken[-1] - taken[0]).total_seconds()
            rates.append((len(taken) - 1) / span if span else 0)
    print(f"guest: {args.memory_mib} MiB RAM, {args.fill_mib} MiB filled, 16 MiB/s dirtied; TCG")
    print(f"{'':28}{'median':>10}{'max':>10}")
    print(
        f"{'virsh migrate (baseline) s':28}{statistics.median(baseline):10.2f}{max(baseline):10.2f}"
    )
    print(f"{'portal engine s':28}{statistics.median(walls):10.2f}{max(walls):10.2f}")
    print(
        f"{'libvirt time_elapsed ms':28}{statistics.median(m.total_time_ms for m in records):10.0f}"
    )
    print(
        f"{'libvirt downtime ms':28}{statistics.median(m.downtime_ms for m in records):10.0f}"
        f"{max(m.downtime_ms for m in records):10.0f}"
    )
    moved = statistics.median(m.transferred_bytes for m in records) / MiB
    print(f"{'data moved MiB':28}{moved:10.0f}")
    if rates:
        print(f"{'progress samples per s':28}{statistics.median(rates):10.1f}{max(rates):10.1f}")
    ratio = statistics.median(walls) / statistics.median(baseline)
    print(f"ratio portal/baseline (median wall): {ratio:.2f}")


def where_any(hosts: list[core.LabHost]) -> core.LabHost:
    for host in hosts:
        if core.virsh(host, "domuuid", core.LINUX_VM_NAME, check=False).returncode == 0:
            return host
    raise RuntimeError(f"{core.LINUX_VM_NAME} is on no lab host")


if __name__ == "__main__":
    main()
