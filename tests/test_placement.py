"""The destination ranking and the evacuation plan as pure functions: table tests,
no database, no hosts (migrations_app/placement.py)."""

from __future__ import annotations

import pytest

from migrations_app.domain.placement import (
    CpuVerdict,
    HostFacts,
    VMNeeds,
    destinations_rank,
    placement_judge,
    plan_evacuation,
)

GIB = 2**30
MIB = 2**20
CPU_OK = CpuVerdict(True, "the destination's CPU accepts the VM's CPU model")


def host(host_id: int, name: str, free_gib: float = 8, total_gib: float = 16, **kw) -> HostFacts:
    values = {
        "host_id": host_id,
        "name": name,
        "reachable": True,
        "memory_free_bytes": int(free_gib * GIB),
        "memory_total_bytes": int(total_gib * GIB),
    }
    values.update(kw)
    return HostFacts(**values)


def vm(name: str = "web", memory_gib: float = 1, **kw) -> VMNeeds:
    values = {"uuid": f"uuid-{name}", "name": name, "memory_bytes": int(memory_gib * GIB)}
    values.update({"live": True})
    values.update(kw)
    return VMNeeds(**values)


# (case, facts, vm, cpu, fit, first reason contains)
JUDGE_CASES = [
    ("plenty of room", host(1, "a"), vm(), CPU_OK, True, "reachable"),
    (
        "maintenance",
        host(1, "a", maintenance=True, maintenance_reason="BIOS update"),
        vm(),
        CPU_OK,
        False,
        "in maintenance: BIOS update",
    ),
    (
        "unreachable",
        host(1, "a", reachable=False, status_text="unreachable: refused"),
        vm(),
        CPU_OK,
        False,
        "unreachable: refused",
    ),
    ("memory short", host(1, "a", free_gib=0.5), vm(memory_gib=1), CPU_OK, False, "not enough"),
    (
        "memory short once the incoming VMs count",
        host(1, "a", free_gib=2, incoming_memory_bytes=int(1.5 * GIB)),
        vm(memory_gib=1),
        CPU_OK,
        False,
        "1,536 MiB already migrating there",
    ),
    (
        "offline VM needs no memory",
        host(1, "a", free_gib=0.5),
        vm(memory_gib=1, live=False, state="shut_off"),
        CPU_OK,
        True,
        "reachable",
    ),
    (
        "CPU refused",
        host(1, "a"),
        vm(),
        CpuVerdict(False, "the destination's CPU cannot run the VM's CPU model"),
        False,
        "CPU: the destination's CPU cannot",
    ),
    (
        "CPU not checked: host silent",
        host(1, "a"),
        vm(),
        CpuVerdict(None, "not checked: a did not answer within 3 s"),
        False,
        "CPU compatibility not checked",
    ),
    ("memory never read", HostFacts(1, "a", True), vm(), CPU_OK, False, "unknown"),
    (
        "other arch",
        host(1, "a", same_kind=False, kind_text="QEMU on aarch64, the VM's host is QEMU on x86_64"),
        vm(),
        CPU_OK,
        False,
        "aarch64",
    ),
    ("host devices", host(1, "a"), vm(has_hostdev=True), CPU_OK, False, "host devices"),
]


@pytest.mark.parametrize(
    "case,facts,needs,cpu,fit,first", JUDGE_CASES, ids=[c[0] for c in JUDGE_CASES]
)
def test_judge(case, facts, needs, cpu, fit, first):
    placement = placement_judge(vm=needs, facts=facts, cpu=cpu)
    assert placement.fit is fit
    assert first in placement.reasons[0], placement.reasons


def test_judge_memory_after_placing_and_reasons():
    facts = host(1, "a", free_gib=4, total_gib=8, incoming_memory_bytes=GIB, incoming_queued=1)
    placement = placement_judge(vm=vm(memory_gib=1), facts=facts, cpu=CPU_OK)
    assert placement.memory_free_after_bytes == 2 * GIB
    assert "2,048 MiB free of 8,192 MiB after placing the VM (1,024 MiB)" in placement.reasons[1]
    assert any("1 migration(s) coming in (0 running, 1 queued)" in r for r in placement.reasons)
    assert any("CPU: the destination's CPU accepts" in r for r in placement.reasons)
    # 100 * 2/8 - 10 * 1 incoming - 0 running VMs
    assert placement.score == pytest.approx(15.0)


# (case, candidates, expected order of names)
RANK_CASES = [
    ("more free memory wins", [host(1, "a", free_gib=4), host(2, "b", free_gib=10)], ["b", "a"]),
    (
        "migrations in flight cost",
        [host(1, "a", free_gib=8, incoming_running=2), host(2, "b", free_gib=7)],
        ["b", "a"],
    ),
    (
        "running VMs break a tie",
        [host(1, "a", running_vms=3), host(2, "b", running_vms=1)],
        ["b", "a"],
    ),
    ("equal: by name", [host(2, "b"), host(1, "a")], ["a", "b"]),
    (
        "unfit last even with the best score",
        [host(1, "a", free_gib=15, maintenance=True), host(2, "b", free_gib=2)],
        ["b", "a"],
    ),
    (
        "outgoing costs less than incoming",
        [host(1, "a", incoming_queued=1), host(2, "b", outgoing=1)],
        ["b", "a"],
    ),
]


@pytest.mark.parametrize("case,candidates,names", RANK_CASES, ids=[c[0] for c in RANK_CASES])
def test_rank(case, candidates, names):
    ranking = destinations_rank(vm=vm(), candidates=candidates, cpu={})
    assert [p.host.name for p in ranking] == names


def test_rank_uses_each_hosts_cpu_verdict():
    ranking = destinations_rank(
        vm=vm(),
        candidates=[host(1, "a", free_gib=12), host(2, "b", free_gib=4)],
        cpu={1: CpuVerdict(False, "incompatible"), 2: CPU_OK},
    )
    assert [(p.host.name, p.fit) for p in ranking] == [("b", True), ("a", False)]


# --- Evacuation -----------------------------------------------------------------------


def plan(vms, candidates, cpu=None, max_incoming=2, max_outgoing=2, source_outgoing=0):
    return plan_evacuation(
        vms=vms,
        candidates=candidates,
        cpu=cpu or {},
        max_incoming=max_incoming,
        max_outgoing=max_outgoing,
        source_outgoing=source_outgoing,
    )


def rows(result) -> list[tuple[str, str, int]]:
    return [(r.vm.name, r.destination.name, r.wave) for r in result.rows]


def test_plan_largest_memory_first_and_spread():
    result = plan(
        [vm("small", 1), vm("big", 4), vm("mid", 2)],
        [host(1, "a", free_gib=8), host(2, "b", free_gib=6)],
    )
    # big -> a (8 free); then a has 4, b has 6: mid -> b; then a 4, b 4: small -> a (name)
    assert rows(result) == [("big", "a", 1), ("mid", "b", 1), ("small", "a", 2)]
    assert [r.order for r in result.rows] == [1, 2, 3]
    assert result.unmovable == []
    assert "wave 2" in result.rows[2].reasons[-1]


def test_plan_never_overcommits_a_destination():
    # Each fits alone on a, not both; b is in maintenance: the second cannot move.
    result = plan(
        [vm("one", 3), vm("two", 3)],
        [host(1, "a", free_gib=5), host(2, "b", free_gib=64, maintenance=True)],
    )
    assert rows(result) == [("one", "a", 1)]
    assert [u.vm.name for u in result.unmovable] == ["two"]
    reasons = result.unmovable[0].reasons
    assert any(r.startswith("no fit destination (a: not enough memory") for r in reasons)
    assert any(r.startswith("no fit destination (b: in maintenance") for r in reasons)


def test_plan_counts_memory_already_migrating_there():
    result = plan([vm("one", 2)], [host(1, "a", free_gib=3, incoming_memory_bytes=2 * GIB)])
    assert result.rows == []
    assert "not enough memory" in result.unmovable[0].reasons[0]


# (case, vm, reason contains)
UNMOVABLE_CASES = [
    ("shut off stays", vm("off", live=False, state="shut_off"), "shut off: stays defined"),
    ("host devices", vm("dev", has_hostdev=True), "host devices"),
    ("already moving", vm("mv", active_migration="migration 7 is queued"), "migration 7"),
]


@pytest.mark.parametrize("case,needs,reason", UNMOVABLE_CASES, ids=[c[0] for c in UNMOVABLE_CASES])
def test_plan_unmovable(case, needs, reason):
    result = plan([needs], [host(1, "a")])
    assert result.rows == []
    assert reason in result.unmovable[0].reasons[0]


def test_plan_respects_cpu_per_vm():
    cpu = {("uuid-x", 1): CpuVerdict(False, "incompatible"), ("uuid-x", 2): CPU_OK}
    result = plan([vm("x")], [host(1, "a", free_gib=12), host(2, "b", free_gib=2)], cpu=cpu)
    assert rows(result) == [("x", "b", 1)]


# (case, kwargs, expected waves)
WAVE_CASES = [
    ("limits of 2: two at once", {}, [1, 1, 2, 2]),
    ("one out at a time", {"max_outgoing": 1}, [1, 2, 3, 4]),
    ("two out already running", {"source_outgoing": 2}, [2, 2, 3, 3]),
]


@pytest.mark.parametrize("case,kwargs,waves", WAVE_CASES, ids=[c[0] for c in WAVE_CASES])
def test_plan_waves(case, kwargs, waves):
    vms = [vm(f"v{i}", 1) for i in range(4)]
    result = plan(vms, [host(1, "a", free_gib=64), host(2, "b", free_gib=64)], **kwargs)
    assert [r.wave for r in result.rows] == waves


def test_plan_incoming_limit_per_destination():
    # Only one destination, incoming limit 1, outgoing 4: one after another.
    vms = [vm(f"v{i}", 1) for i in range(3)]
    result = plan(vms, [host(1, "a", free_gib=64)], max_incoming=1, max_outgoing=4)
    assert [r.wave for r in result.rows] == [1, 2, 3]


def test_plan_no_other_host():
    result = plan([vm("lonely")], [])
    assert result.unmovable[0].reasons == ["no other host is registered"]


def test_plan_says_local_disks_are_copied():
    result = plan([vm("local", local_disks=2), vm("shared")], [host(1, "a"), host(2, "b")])
    by_name = {r.vm.name: r.reasons for r in result.rows}
    assert any(r.startswith("2 local disk(s) copied to") for r in by_name["local"])
    assert not any("local disk" in r for r in by_name["shared"])
