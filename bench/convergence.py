"""Benchmark: a live migration that cannot converge, and what each convergence policy
makes of it (issue #21's done-when).

Two lab hosts of their own (127.0.0.76-77); the Linux guest (512 MiB, 300 MiB filled
from /dev/urandom) rewrites its memory at 16 MiB/s; every migration is capped at
10 MiB/s, so the copy can never catch up. Real django-q2 worker processes run the
portal's migrations. In order, each from wherever the guest runs to the other host:

- `virsh migrate --live --p2p --bandwidth 10` with the portal's own URIs: libvirt alone;
- the portal with policy `none` (today's behaviour);
  both are given BASELINE_S (120 s) and then cancelled: bounded, never finished;
- each policy: minimal_downtime, postcopy_when_stalled (with allow_postcopy),
  pause_when_stalled, abort_when_stalled, to its end.

Printed per run: outcome, total time (request -> end), downtime (libvirt's; for
pause_when_stalled also the guest's pause), memory passes, the policy's steps, and the
ratio of the total time to the lower bound (guest RAM / cap = 51.2 s).
Targets: postcopy_when_stalled <= 2.0x the lower bound; minimal_downtime ends with a
downtime <= its last step, or aborts with the reason.

Stall detection here judges PORTAL_MIGRATION_STALL_PASSES=2 passes (the default 3 makes
minimal_downtime's six steps last ~10 min alone) and a shorter downtime schedule; both
are printed. --quick: 1 pass, two steps, 60 s baselines (~5 min).

Run as root:  .venv/bin/python bench/convergence.py [--quick] [--keep-lab]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var-bench-convergence"
QUICK = "--quick" in sys.argv
STALL_PASSES = "1" if QUICK else "2"
DOWNTIME_STEPS = "400,3200" if QUICK else "200,800,3200"
sys.path.insert(0, str(ROOT))
from bench.common import lab_hosts_register, scratch_environment, setup_django  # noqa: E402

scratch_environment(
    DATA_DIR,
    {
        "PORTAL_MIGRATION_STALL_PASSES": STALL_PASSES,
        "PORTAL_MIGRATION_CONVERGENCE_DOWNTIME_STEPS_MS": DOWNTIME_STEPS,
    },
)
setup_django()

from django.core.management import call_command  # noqa: E402
from django.db.models import Max  # noqa: E402
from django_q.brokers import get_broker  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from audit.services import Actor  # noqa: E402
from hosts.access.peer_services import peer_uri  # noqa: E402
from hosts.models import Host  # noqa: E402
from lab import domains, guest_images, layout, lifecycle, machines  # noqa: E402
from migrations_app.domain.options import MigrationOptions  # noqa: E402
from migrations_app.models import Migration, MigrationSample  # noqa: E402
from migrations_app.requests import migration_cancel, migration_request  # noqa: E402
from tests.processes import Workers  # noqa: E402
from vms.selectors import vm_current_with_host  # noqa: E402
from vms.services import host_refresh  # noqa: E402

MEMORY_MIB = 512
FILL_MIB = 300
DIRTY_MIB_S = 16
CAP_MIB_S = 10
LOWER_BOUND_S = MEMORY_MIB / CAP_MIB_S
BASELINE_S = 60 if QUICK else 120
POLICY_TIMEOUT_S = 600
FINAL = ("succeeded", "failed", "cancelled", "needs_attention")
POLICIES = ("minimal_downtime", "postcopy_when_stalled", "pause_when_stalled", "abort_when_stalled")


@dataclass
class Run:
    name: str
    outcome: str
    total_s: float
    downtime_ms: int | None = None
    passes: int | None = None
    steps: list[str] = field(default_factory=list)
    note: str = ""


def lab_config() -> layout.LabConfig:
    return layout.LabConfig(
        root=DATA_DIR / "lab",
        image_cache=Path(os.environ.get("BENCH_IMAGE_CACHE", ROOT / "var" / "guest-images")),
        first_address="127.0.0.76",
        name_prefix="bconv",
        guest_memory_mib=MEMORY_MIB,
        guest_fill_mib=FILL_MIB,
        guest_dirty_mib_s=DIRTY_MIB_S,
    )


def refresh_all(actor: Actor) -> None:
    for host in Host.objects.all():
        host_refresh(host=host, actor=actor)


def where(hosts: list[layout.LabHost], uuid: str) -> tuple[Host, Host]:
    """(source, destination) as Host rows: where the guest runs, and the other host."""
    for lab_host in hosts:
        if machines.virsh(lab_host, "domstate", uuid, check=False).stdout.strip() == "running":
            source = Host.objects.get(address=lab_host.address)
            return source, Host.objects.exclude(pk=source.pk).get()
    raise RuntimeError("the guest runs nowhere")


def iteration(host: Host, uuid: str) -> int | None:
    """libvirt's memory pass of the running job (virsh domjobinfo --rawstats)."""
    command = ["virsh", "-c", host.connection_uri, "domjobinfo", uuid, "--rawstats"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.strip().startswith("memory_iteration:"):
            return int(line.split(":", 1)[1])
    return None


def virsh_baseline(hosts: list[layout.LabHost], uuid: str) -> Run:
    source, destination = where(hosts, uuid)
    command = ["virsh", "-q", "-c", source.connection_uri, "migrate", "--live", "--p2p"]
    command += ["--persistent", "--undefinesource", "--bandwidth", str(CAP_MIB_S)]
    command += [uuid, peer_uri(source, destination)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    passes = None
    while process.poll() is None and time.monotonic() - started < BASELINE_S:
        passes = iteration(source, uuid) or passes
        time.sleep(2)
    if process.poll() is None:
        subprocess.run(["virsh", "-c", source.connection_uri, "domjobabort", uuid], timeout=60)
        process.wait(120)
        outcome = "not finished, cancelled"
    else:
        outcome = "finished" if process.returncode == 0 else f"failed: {process.stderr.read()}"
    return Run("virsh migrate", outcome, time.monotonic() - started, passes=passes)


def steps_of(migration_id: int) -> list[str]:
    details = AuditEvent.objects.filter(
        target_type="migrations_app.migration",
        target_id=str(migration_id),
        event_type="migration.convergence_step",
    ).order_by("occurred_at", "id")
    steps = []
    for detail in details.values_list("detail", flat=True):
        step = detail["convergence"]
        allowed = step.get("downtime_read_ms") or step.get("allowed_downtime_ms")
        label = f"{step['step']}@pass{step['pass']}"
        steps.append(label + (f"({allowed} ms)" if step["step"] == "raise_downtime" else ""))
    return steps


def portal_run(hosts, uuid: str, actor: Actor, policy: str, bounded: bool) -> Run:
    source, destination = where(hosts, uuid)
    vm = vm_current_with_host(uuid=uuid)
    options = MigrationOptions(
        bandwidth_mib_s=CAP_MIB_S,
        delete_source=True,
        convergence_policy=policy,
        allow_postcopy=policy == "postcopy_when_stalled",
    )
    migration = migration_request(vm=vm, destination=destination, options=options, actor=actor)
    started = time.monotonic()
    limit = BASELINE_S if bounded else POLICY_TIMEOUT_S
    record = migration
    while time.monotonic() - started < limit:
        record = Migration.objects.get(pk=migration.pk)
        if record.status in FINAL:
            break
        time.sleep(0.5)
    cancelled = False
    if record.status not in FINAL:
        migration_cancel(migration=record, actor=actor)
        cancelled = True
        while (record := Migration.objects.get(pk=migration.pk)).status not in FINAL:
            time.sleep(0.5)
    total = (record.finished_at - record.created_at).total_seconds()
    outcome = "not finished, cancelled" if cancelled else record.status
    note = record.error if record.status != "succeeded" else ""
    if record.paused_for_convergence_at:
        paused_s = (record.finished_at - record.paused_for_convergence_at).total_seconds()
        note = f"guest paused by the policy for {paused_s:.1f} s until the end"
    if record.postcopy_started_at:
        left = (record.finished_at - record.postcopy_started_at).total_seconds()
        note = f"post-copy for the last {left:.1f} s"
    refresh_all(actor)
    return Run(
        f"portal {policy}",
        outcome,
        total,
        downtime_ms=record.downtime_ms,
        # The highest pass sampled (a cancelled job's last read may be empty).
        passes=MigrationSample.objects.filter(migration_id=record.pk).aggregate(
            most=Max("memory_iteration")
        )["most"],
        steps=steps_of(record.pk),
        note=note,
    )


def report(runs: list[Run]) -> None:
    print(
        f"\nguest {MEMORY_MIB} MiB RAM, {FILL_MIB} MiB filled, rewriting {DIRTY_MIB_S} MiB/s; "
        f"cap {CAP_MIB_S} MiB/s; lower bound {LOWER_BOUND_S:.1f} s; stall passes "
        f"{STALL_PASSES}, downtime steps {DOWNTIME_STEPS} ms; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    header = f"{'run':32}{'outcome':26}{'total s':>8}{'x bound':>8}{'downtime':>9}{'passes':>7}"
    print(header)
    for run in runs:
        downtime = f"{run.downtime_ms} ms" if run.downtime_ms is not None else "-"
        print(
            f"{run.name:32}{run.outcome:26}{run.total_s:8.1f}{run.total_s / LOWER_BOUND_S:8.2f}"
            f"{downtime:>9}{run.passes if run.passes is not None else '-':>7}"
        )
        if run.steps:
            print(f"{'':4}steps: {', '.join(run.steps)}")
        if run.note:
            print(f"{'':4}{run.note[:200]}")
    by_name = {run.name: run for run in runs}
    postcopy = by_name.get("portal postcopy_when_stalled")
    if postcopy:
        ratio = postcopy.total_s / LOWER_BOUND_S
        ok = postcopy.outcome == "succeeded" and ratio <= 2.0
        print(f"postcopy_when_stalled: {ratio:.2f}x the lower bound (target <= 2.0x): "
              f"{'meets' if ok else 'misses'}")  # fmt: skip
    minimal = by_name.get("portal minimal_downtime")
    if minimal:
        last_step = int(DOWNTIME_STEPS.split(",")[-1])
        if minimal.outcome == "succeeded":
            ok = (minimal.downtime_ms or 0) <= last_step
            print(f"minimal_downtime: succeeded with {minimal.downtime_ms} ms downtime "
                  f"(last step {last_step} ms): {'meets' if ok else 'misses'}")  # fmt: skip
        else:
            ok = "not converging" in minimal.note
            print(f"minimal_downtime: {minimal.outcome}, reason given: "
                  f"{'meets' if ok else 'misses'}")  # fmt: skip
    for bounded in ("virsh migrate", "portal none"):
        if run := by_name.get(bounded):
            verdict = "bounded as expected" if "cancelled" in run.outcome else "FINISHED"
            print(f"{bounded}: {run.outcome} after {run.total_s:.0f} s ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 stall pass, 2 steps, 60 s")
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated run names (virsh,none,...)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    subprocess.run(["bash", "scripts/redis.sh", "start"], cwd=ROOT, check=True)
    call_command("migrate", verbosity=0)
    get_broker().purge_queue()
    config = lab_config()
    hosts = lifecycle.up(config, hosts=2)
    workers = Workers(DATA_DIR / "workers.log")
    actor = Actor.system("bench")
    runs: list[Run] = []
    try:
        domains.wait_for_console(config, guest_images.MARKER_FILLED, timeout=240)
        lab_hosts_register(actor, config, hosts)
        refresh_all(actor)
        uuid = next(
            machines.virsh(h, "domuuid", layout.LINUX_VM_NAME, check=False).stdout.strip()
            for h in hosts
            if machines.virsh(h, "domuuid", layout.LINUX_VM_NAME, check=False).returncode == 0
        )
        workers.start()
        if not only or "virsh" in only:
            runs.append(virsh_baseline(hosts, uuid))
            print(runs[-1], flush=True)
            refresh_all(actor)
        for policy in ("none", *POLICIES):
            if only and policy not in only:
                continue
            runs.append(portal_run(hosts, uuid, actor, policy, bounded=policy == "none"))
            print(runs[-1], flush=True)
    finally:
        workers.stop()
        get_broker().purge_queue()
        if not args.keep_lab:
            lifecycle.down(config)
    report(runs)


if __name__ == "__main__":
    main()
