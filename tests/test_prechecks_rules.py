"""The pre-checks' rules and runner, table-tested on facts made here (no host, no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from hosts import gateway
from hosts.models import Host, Transport
from migrations_app.domain.options import MigrationOptions
from migrations_app.models import Migration
from migrations_app.prechecks import CheckName, checks_skipped, judge
from migrations_app.prechecks.facts import (
    DestinationFacts,
    Facts,
    MigrationPlan,
    PeerAccess,
    SourceFacts,
    Unreachable,
    VmOnDestination,
)
from migrations_app.prechecks.rules import RULES, CheckStatus

UUID = "00000000-0000-0000-0000-000000000001"
DISK = "/var/lib/libvirt/images/web-1.qcow2"
FOLDER = "/var/lib/libvirt/images"
MIB = 2**20
PASS, FAIL, SKIPPED = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.SKIPPED


def _host(pk: int, name: str, **fields) -> Host:
    fields = {"hypervisor_type": "QEMU", "arch": "x86_64", "transport": Transport.TCP, **fields}
    return Host(pk=pk, name=name, address=f"192.0.2.{pk}", **fields)


def _vm(**fields) -> gateway.DomainInfo:
    disk = gateway.DiskInfo("vda", DISK, "disk", "qcow2", 16 * MIB)
    values = {
        "uuid": UUID,
        "name": "web-1",
        "state": "running",
        "persistent": True,
        "vcpus": 1,
        "memory_kib": 1024 * 1024,
        "max_memory_kib": 1024 * 1024,
        "arch": "x86_64",
        "machine_type": "pc",
        "domain_type": "kvm",
        "disks": [disk],
        "has_hostdev": False,
    }
    return gateway.DomainInfo(**{**values, **fields})


def _caps(free_mib: int = 4096, **fields) -> gateway.HostCapabilities:
    values = {
        "hostname": "dst",
        "arch": "x86_64",
        "cpu_model": "Skylake",
        "cpu_vendor": "Intel",
        "cpu_count": 4,
        "hypervisor_type": "QEMU",
        "hypervisor_version": "7.2.0",
        "libvirt_version": "9.0.0",
        "host_uuid": "",
        "memory_total_bytes": 8192 * MIB,
        "memory_free_bytes": free_mib * MIB,
    }
    return gateway.HostCapabilities(**{**values, **fields})


def _facts(**changes) -> Facts:
    """A migration every rule passes (src -> dst over tcp, shared storage), changed."""
    options = changes.pop("options", MigrationOptions())
    plan = MigrationPlan(UUID, "web-1", _host(1, "src"), _host(2, "dst"), options)
    plan = replace(plan, **changes.pop("plan", {}))
    facts = Facts(
        plan=plan,
        timeout=5,
        other_migration=None,
        tls_problems=None,
        peer=PeerAccess(needed=False, problem=None, current=False),
        source=SourceFacts(_vm(), "<domain/>", None),
        destination=DestinationFacts(_caps(), None, None),
        vm_on_destination=VmOnDestination(True, "the CPU fits", {DISK: _volume()}, {}),
    )
    return replace(facts, **changes)


def _volume(capacity: int = 16 * MIB) -> gateway.VolumeInfo:
    return gateway.VolumeInfo(DISK, capacity, MIB)


def _results(facts: Facts) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.message) for c in judge(facts).results}


def test_every_check_has_one_rule_in_the_order_the_api_shows():
    assert list(RULES) == list(CheckName)
    assert [c.name for c in judge(_facts()).results] == [name.value for name in CheckName]
    assert [c.name for c in checks_skipped("why")] == [name.value for name in CheckName]


def test_a_migration_that_fits_passes_every_check_but_the_tls_one():
    results = _results(_facts())
    assert {name: status for name, (status, _m) in results.items() if status != PASS} == {
        "tls_certificates": SKIPPED
    }


COPY = MigrationOptions(storage="copy")
OFFLINE = MigrationOptions(live=False)
MAINTENANCE = {"maintenance": True, "maintenance_reason": "disk swap"}
AN_HOUR = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
ON_DESTINATION = VmOnDestination(True, "ok", {DISK: None}, {FOLDER: None})
SSH_DST = _host(2, "dst", transport=Transport.SSH, ssh_user="portal")


@pytest.mark.parametrize(
    ("name", "changes", "status", "message"),
    [
        ("destination_is_not_source", {}, PASS, "src -> dst"),
        (
            "destination_is_not_source",
            {"plan": {"destination": _host(1, "src")}},
            FAIL,
            "src is the host the VM runs on now",
        ),
        (
            "destination_is_not_source",
            {"plan": {"destination": _host(3, "src2", host_uuid="h")}, "peer": None},
            PASS,
            "src -> src2",
        ),
        ("destination_not_in_maintenance", {}, PASS, "dst is not in maintenance"),
        (
            "destination_not_in_maintenance",
            {"plan": {"destination": _host(2, "dst", **MAINTENANCE, maintenance_since=AN_HOUR)}},
            FAIL,
            "dst is in maintenance since 2026-12-01 09:30 UTC (disk swap) and takes no new VMs: "
            "choose another host, or take it out of maintenance first",
        ),
        (
            "destination_not_in_maintenance",
            {"plan": {"destination": _host(2, "dst", retired=True)}},
            FAIL,
            "dst is retired and takes no VMs: choose another host, "
            "or bring it back into service first",
        ),
        (
            "no_other_migration",
            {"other_migration": Migration(pk=7, status="queued")},
            FAIL,
            "migration 7 of this VM is already queued",
        ),
        ("no_other_migration", {}, PASS, "no other migration of this VM is queued or running"),
        (
            "tls_certificates",
            {},
            SKIPPED,
            "not needed: no tls option, and the destination is not reached over tls",
        ),
        (
            "tls_certificates",
            {"tls_problems": ("dst has none",), "options": MigrationOptions(tls=True)},
            FAIL,
            "needed for the tls option: dst has none",
        ),
        (
            "tls_certificates",
            {
                "tls_problems": (),
                "plan": {
                    "source": _host(1, "src", tls_server_not_after=AN_HOUR),
                    "destination": _host(2, "dst", transport=Transport.TLS),
                },
            },
            PASS,
            "src and dst have valid certificates of the portal's CA (the first expires 2026-12-01)",
        ),
        ("source_reachable", {}, PASS, "src answered and has the VM"),
        (
            "source_reachable",
            {"source": Unreachable("timed out")},
            FAIL,
            "src is not reachable: timed out",
        ),
        ("source_reachable", {"source": SourceFacts(None)}, FAIL, "the VM is not on src any more"),
        (
            "source_reachable",
            {
                "source": SourceFacts(None),
                "destination": DestinationFacts(_caps(), _vm(), None),
            },
            FAIL,
            "the VM is not on src any more: it runs on dst now (moved outside the portal)",
        ),
        (
            "source_reachable",
            {
                "source": SourceFacts(None),
                "destination": DestinationFacts(_caps(), _vm(state="shut_off"), None),
            },
            FAIL,
            "the VM is not on src any more: dst has it now (shut off)",
        ),
        ("destination_reachable", {}, PASS, "dst answered within 5 s"),
        (
            "destination_reachable",
            {"destination": Unreachable("refused")},
            FAIL,
            "dst is not reachable within 5 s: refused",
        ),
        (
            "destination_reachable",
            {"destination": Unreachable("refused"), "plan": {"destination": SSH_DST}},
            FAIL,
            "dst is not reachable within 5 s: refused (over ssh as portal: ",
        ),
        (
            "destination_reachable",
            {"vm_on_destination": Unreachable("no answer within 20 s")},
            FAIL,
            "dst stopped answering: no answer within 20 s",
        ),
        ("same_hypervisor_and_arch", {}, PASS, "both are QEMU on x86_64"),
        (
            "same_hypervisor_and_arch",
            {"destination": DestinationFacts(_caps(arch="aarch64"), None, None)},
            FAIL,
            "src is QEMU on x86_64, dst is QEMU on aarch64",
        ),
        ("vm_state_fits_mode", {}, PASS, "the VM is running"),
        (
            "vm_state_fits_mode",
            {"source": SourceFacts(_vm(state="shut_off"))},
            FAIL,
            "the VM is shut off: a live migration needs a running or paused VM",
        ),
        ("vm_state_fits_mode", {"options": OFFLINE}, FAIL, "the VM is running: an offline"),
        (
            "vm_state_fits_mode",
            {"source": SourceFacts(_vm(persistent=False)), "inventory_persistent": True},
            FAIL,
            "the VM is running as a transient domain: its definition on src was removed",
        ),
        (
            "vm_state_fits_mode",
            {"source": SourceFacts(_vm(persistent=False)), "inventory_persistent": False},
            PASS,
            "the VM is running",
        ),
        (
            "vm_state_fits_mode",
            {"options": OFFLINE, "source": SourceFacts(_vm(state="shut_off"))},
            PASS,
            "the VM is shut off",
        ),
        (
            "vm_state_fits_mode",
            {"options": OFFLINE, "source": SourceFacts(_vm(state="shut_off", persistent=False))},
            FAIL,
            "the VM is shut off: an offline migration needs a shut-off, persistent",
        ),
        ("cpu_compatible", {}, PASS, "the CPU fits"),
        (
            "cpu_compatible",
            {"vm_on_destination": VmOnDestination(False, "host-passthrough", {DISK: None}, {})},
            FAIL,
            "host-passthrough",
        ),
        ("no_host_devices", {}, PASS, "no host devices passed through"),
        (
            "no_host_devices",
            {"source": SourceFacts(_vm(has_hostdev=True))},
            FAIL,
            "the VM has PCI/USB host devices passed through, which cannot be migrated",
        ),
        ("disks_available", {}, PASS, "all 1 disk(s) are present on dst"),
        (
            "disks_available",
            {"vm_on_destination": ON_DESTINATION},
            FAIL,
            f"not present on dst: {DISK}; use storage 'copy' to copy local disks",
        ),
        (
            "disks_available",
            {"vm_on_destination": ON_DESTINATION, "options": COPY},
            PASS,
            "1 disk(s) will be copied to dst",
        ),
        ("destination_has_space", {}, PASS, "no disk is copied (shared storage)"),
        (
            "destination_has_space",
            {"options": COPY},
            PASS,
            "every disk already exists on dst: libvirt copies into it",
        ),
        (
            "destination_has_space",
            {"options": COPY, "vm_on_destination": ON_DESTINATION},
            FAIL,
            f"no active storage pool on dst has the folder {FOLDER}",
        ),
        (
            "destination_has_space",
            {
                "options": COPY,
                "source": SourceFacts(_vm(), "<domain/>", {DISK: _volume(64 * MIB)}),
                "vm_on_destination": VmOnDestination(
                    True, "ok", {DISK: None}, {FOLDER: gateway.PoolInfo("p", FOLDER, 0, 0, MIB)}
                ),
            },
            FAIL,
            "pool 'p' on dst (/var/lib/libvirt/images) has 1.0 MiB free, the disks to copy "
            "there (web-1.qcow2) take 64.0 MiB",
        ),
        ("enough_memory", {}, PASS, "dst has 4096 MiB free, the VM needs 1024 MiB"),
        (
            "enough_memory",
            {"destination": DestinationFacts(_caps(free_mib=512), None, None)},
            FAIL,
            "dst has 512 MiB free, the VM needs 1024 MiB",
        ),
        (
            "enough_memory",
            {
                "destination": DestinationFacts(_caps(free_mib=512), None, None),
                "options": OFFLINE,
            },
            PASS,
            "dst has 512 MiB free",
        ),
        (
            "no_name_or_uuid_clash",
            {},
            PASS,
            "no domain named 'web-1' or with this UUID on dst",
        ),
        (
            "no_name_or_uuid_clash",
            {"destination": DestinationFacts(_caps(), None, _vm(uuid="other"))},
            FAIL,
            "dst already has another domain named 'web-1'",
        ),
        (
            "no_name_or_uuid_clash",
            {"plan": {"options": MigrationOptions(new_name="web-2")}},
            PASS,
            "no domain named 'web-2'",
        ),
        ("peer_access", {}, PASS, "src opens dst over tcp"),
        (
            "peer_access",
            {"peer": PeerAccess(needed=True, problem="no ssh access", current=False)},
            FAIL,
            "src cannot be given access to dst: no ssh access",
        ),
        (
            "peer_access",
            {"peer": PeerAccess(needed=True, problem=None, current=True)},
            PASS,
            "src has its own ssh access to dst",
        ),
        (
            "peer_access",
            {"peer": PeerAccess(needed=True, problem=None, current=False)},
            PASS,
            "src gets its own ssh key for dst when the migration starts",
        ),
    ],
)
def test_rule(name, changes, status, message):
    got_status, got_message = _results(_facts(**changes))[name]
    assert (got_status, got_message[: len(message)]) == (status, message)


NO_TLS = "not needed: no tls option, and the destination is not reached over tls"
ABOUT_VM = {"cpu_compatible", "disks_available", "destination_has_space"}
WITH_VM = {"vm_state_fits_mode", "no_host_devices", "enough_memory", "no_name_or_uuid_clash"}


@pytest.mark.parametrize(
    ("changes", "skipped", "reason"),
    [
        ({"source": Unreachable("x"), "vm_on_destination": None}, ABOUT_VM | WITH_VM, "source"),
        (
            {"destination": Unreachable("x"), "vm_on_destination": None},
            {"same_hypervisor_and_arch", *ABOUT_VM, *WITH_VM},
            "destination",
        ),
        (
            {"source": Unreachable("x"), "destination": Unreachable("y")},
            {"same_hypervisor_and_arch", *ABOUT_VM, *WITH_VM},
            "source",
        ),
        ({"vm_on_destination": Unreachable("x")}, ABOUT_VM, "destination"),
        ({"peer": None}, {"peer_access"}, ""),  # the source is the destination
    ],
)
def test_a_rule_without_its_facts_is_skipped_naming_the_host_that_failed(changes, skipped, reason):
    results = judge(_facts(**changes)).results
    why = f"not checked: {reason} reachable failed" if reason else "not checked"
    assert {c.name: c.message for c in results if c.status == SKIPPED} == {
        **{name: why for name in skipped},
        "tls_certificates": NO_TLS,
    }


def test_the_engine_is_handed_what_the_checks_learned():
    home = _vm(state="shut_off")
    facts = _facts(destination=DestinationFacts(_caps(), home, home))
    assert judge(facts).engine_facts.destination_had_definition
    paused = judge(_facts(source=SourceFacts(_vm(state="paused"))))
    assert paused.engine_facts.source_state == "paused"
    assert paused.engine_facts.source_was_paused
    assert not paused.engine_facts.destination_had_definition
    gone = judge(_facts(source=Unreachable("x"))).engine_facts
    assert (gone.source_state, gone.destination_had_definition) == ("", False)
