"""Benchmark: how fast an evacuation empties a host, against the ideal of its own VMs.

A lab host of its own (127.0.0.73) runs N small diskless guests (64 MiB, TCG); two more
hosts (127.0.0.74-75) take them, at most 2 incoming migrations each (4 slots), at most
4 out of the source. Real django-q2 worker processes run the migrations.

1. The evacuation (POST evacuate's service, dry_run false): its makespan is the last
   child's `finished_at` - the batch's `created_at`.
2. Then each VM alone, back to the source one at a time: its single time is the same
   span of one migration (`finished_at` - `created_at`: queue, claim, pre-checks, libvirt,
   completion), measured in the same run on the same machine.
ideal = sum(single times) / slots; target makespan <= 1.25 x ideal. "waves" is what the
makespan would be if every wave waited for its slowest VM (from the single times).

--bandwidth N caps every migration (evacuation and singles alike) at N MiB/s: the copies
are then bound by the link, as in a fleet whose migration network is the bottleneck,
rather than by the 2 cores that run all the guests, hosts and QEMUs of the lab.
--fill-mib N boots each guest with the lab's Linux kernel and fills N MiB of its RAM once
(data that does not change): without it a guest's RAM is nearly all zero pages, which
QEMU sends as flags, and no cap binds.

Run as root:  .venv/bin/python bench/evacuation.py [--vms 8] [--fill-mib 32 --bandwidth 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var-bench-evacuation"
SLOTS_PER_DESTINATION = 2
DESTINATIONS = 2
SLOTS = SLOTS_PER_DESTINATION * DESTINATIONS
sys.path.insert(0, str(ROOT))
from bench.common import lab_hosts_register, scratch_environment, setup_django  # noqa: E402

scratch_environment(
    DATA_DIR,
    {
        "PORTAL_MIGRATION_MAX_INCOMING": str(SLOTS_PER_DESTINATION),
        "PORTAL_MIGRATION_MAX_OUTGOING": str(SLOTS),
    },
)
setup_django()

from django.core.management import call_command  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402

from audit.services import Actor  # noqa: E402
from hosts import services as host_services  # noqa: E402
from hosts.models import Host  # noqa: E402
from lab import domains, layout, lifecycle, machines  # noqa: E402
from migrations_app.domain.options import MigrationOptions  # noqa: E402
from migrations_app.evacuation import host_evacuate  # noqa: E402
from migrations_app.models import Migration, MigrationBatch  # noqa: E402
from migrations_app.requests import migration_request  # noqa: E402
from tests.processes import Workers  # noqa: E402
from vms.models import VM  # noqa: E402
from vms.selectors import vm_current_with_host  # noqa: E402
from vms.services import host_refresh  # noqa: E402

TARGET = 1.25
FINAL = ("succeeded", "failed", "cancelled", "needs_attention")


def lab_config() -> layout.LabConfig:
    return layout.LabConfig(
        root=DATA_DIR / "lab",
        image_cache=Path(os.environ.get("BENCH_IMAGE_CACHE", ROOT / "var" / "guest-images")),
        first_address="127.0.0.73",
        name_prefix="bevac",
        start_vms=False,
    )


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def refresh_all(actor: Actor) -> None:
    for host in Host.objects.all():
        host_refresh(host=host, actor=actor)


def evacuate(source: Host, actor: Actor, bandwidth: int) -> tuple[MigrationBatch, list[Migration]]:
    _, batch = host_evacuate(
        host=source, actor=actor, dry_run=False, reason="bench", bandwidth_mib_s=bandwidth
    )
    batch = wait(
        lambda: MigrationBatch.objects.filter(pk=batch.pk, finished_at__isnull=False).first(),
        600,
        "the evacuation to finish",
    )
    children = list(batch.children.order_by("started_at"))
    if batch.status != "succeeded":
        raise RuntimeError(f"evacuation {batch.status}: {[(c.vm_name, c.error) for c in children]}")
    return batch, children


def single_to(uuid: str, source: Host, actor: Actor, bandwidth: int = 0) -> Migration:
    """One VM alone, to `source`: the same span as a batch child's."""
    vm = vm_current_with_host(uuid=uuid)
    options = MigrationOptions(live=True, bandwidth_mib_s=bandwidth)
    migration = migration_request(vm=vm, destination=source, options=options, actor=actor)
    migration = wait(
        lambda: Migration.objects.filter(pk=migration.pk, status__in=FINAL).first(),
        300,
        f"the single migration of {vm.name}",
    )
    if migration.status != "succeeded":
        raise RuntimeError(f"{vm.name}: {migration.status}: {migration.error}")
    # The next one reads the VM where it is now.
    for host in Host.objects.exclude(pk=source.pk):
        host_refresh(host=host, actor=actor)
    host_refresh(host=source, actor=actor)
    return migration


def span_s(migration: Migration) -> float:
    return (migration.finished_at - migration.created_at).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--bandwidth", type=int, default=0, help="MiB/s per migration")
    parser.add_argument("--fill-mib", type=int, default=0, help="RAM each guest fills")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()

    subprocess.run(["bash", "scripts/redis.sh", "start"], cwd=ROOT, check=True)
    call_command("migrate", verbosity=0)
    get_broker().purge_queue()
    config = lab_config()
    hosts = lifecycle.up(config, hosts=1 + DESTINATIONS)
    # A worker stays busy after `succeeded` (the inventory refresh of both hosts): twice
    # the slots, so a freed slot never waits for a free worker.
    workers = Workers(DATA_DIR / "workers.log", env={"PORTAL_Q_WORKERS": str(2 * SLOTS + 1)})
    actor = Actor.system("bench")
    try:
        for lab_host in hosts:
            names = machines.virsh(lab_host, "list", "--all", "--name").stdout.split()
            for name in (n for n in names if "-extra-" in n):
                machines.virsh(lab_host, "destroy", name, check=False)
                machines.virsh(lab_host, "undefine", name, check=False)
        names = domains.extra_vms_start_on(config, hosts[0], args.vms, fill_mib=args.fill_mib)
        for name in names if args.fill_mib else []:
            domains.wait_for_console(config, timeout=600, vm_name=name)
        lab_hosts_register(actor, config, hosts)
        refresh_all(actor)
        source = Host.objects.get(address=hosts[0].address)
        workers.start()
        # Warm-up, not measured: the cluster's processes and their host connections up.
        warm = VM.objects.filter(host=source).order_by("name").first()
        single_to(str(warm.uuid), Host.objects.exclude(pk=source.pk).first(), actor)
        single_to(str(warm.uuid), source, actor)

        batch, children = evacuate(source, actor, args.bandwidth)
        makespan = (max(c.finished_at for c in children) - batch.created_at).total_seconds()
        t0 = batch.created_at
        print(f"\nevacuation of {source.name}: {len(children)} VMs, max_parallel "
              f"{batch.max_parallel}, {SLOTS_PER_DESTINATION} slots into each of "
              f"{DESTINATIONS} hosts")  # fmt: skip
        for c in children:
            print(
                f"  {c.vm_name:18} -> {c.destination.name:8} start "
                f"{(c.started_at - t0).total_seconds():6.2f} s  end "
                f"{(c.finished_at - t0).total_seconds():6.2f} s  "
                f"({span_s(c):5.2f} s from its request)"
            )
        host_services.host_maintenance_set(host=source, enabled=False, actor=actor)
        refresh_all(actor)

        back = {
            c.vm_name: single_to(str(c.vm_uuid), source, actor, args.bandwidth) for c in children
        }
        singles = {name: span_s(m) for name, m in back.items()}
        run_s = {name: (m.finished_at - m.started_at).total_seconds() for name, m in back.items()}
    finally:
        workers.stop()
        get_broker().purge_queue()
        if not args.keep_lab:
            lifecycle.down(config)

    ideal = sum(singles.values()) / SLOTS
    ordered = [singles[c.vm_name] for c in sorted(children, key=lambda c: c.pk)]
    waves = sum(max(ordered[i : i + SLOTS]) for i in range(0, len(ordered), SLOTS))
    print("\nsingle migrations (each alone, back to the source):")
    for name, seconds in singles.items():
        print(f"  {name:18} {seconds:6.2f} s")
    ratio = makespan / ideal
    print(
        f"\nbandwidth per migration: {args.bandwidth or 'unlimited'} MiB/s; guest RAM filled: "
        f"{args.fill_mib} MiB; "
        f"VMs {len(children)}, slots {SLOTS}; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"sum of single times       {sum(singles.values()):7.2f} s")
    print(f"ideal (sum / {SLOTS} slots)     {ideal:7.2f} s")
    print(f"waves (each waits for its slowest, from the singles) {waves:7.2f} s")
    print(f"evacuation makespan       {makespan:7.2f} s")
    verdict = "meets" if ratio <= TARGET else "misses"
    print(f"ratio makespan / ideal    {ratio:7.2f}x (target <= {TARGET}x: {verdict})")
    # What the scheduling itself adds: the children's own spans (start -> end, as slow
    # as 4 at once on this machine make them) packed into the slots without a gap.
    busy = sum((c.finished_at - c.started_at).total_seconds() for c in children)
    packed = busy / SLOTS
    gaps = [
        (nxt.started_at - freed).total_seconds()
        for freed, nxt in zip(
            sorted(c.finished_at for c in children), children[SLOTS:], strict=False
        )
    ]
    print(f"children's spans in the evacuation (start->end), summed {busy:7.2f} s")
    print(f"  packed into {SLOTS} slots without a gap {packed:7.2f} s; makespan / packed "
          f"{makespan / packed:5.2f}x; slot use {busy / (SLOTS * makespan):4.0%}")  # fmt: skip
    if gaps:
        print(
            f"  a freed slot to the next start: median "
            f"{sorted(gaps)[len(gaps) // 2]:5.2f} s, max {max(gaps):5.2f} s"
        )
    alone = sorted(run_s.values())
    among = sorted((c.finished_at - c.started_at).total_seconds() for c in children)
    print(f"  one VM's start->end alone vs among {SLOTS} at once (medians): "
          f"{alone[len(alone) // 2]:5.2f} s vs {among[len(among) // 2]:5.2f} s "
          "(the machine's cores, not the slots, bound the parallel speed)")  # fmt: skip


if __name__ == "__main__":
    main()
