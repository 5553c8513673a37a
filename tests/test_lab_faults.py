"""The lab's fault tools (lab.faults) really produce the faults they name.

Checked from the outside with virsh, raw sockets and /proc against the suite's lab
hosts: a frozen libvirtd hangs its clients but not its guests, a control-plane cut
isolates one host's libvirtd and sshd, a data-plane cut stalls a live migration, and
nothing of it survives heal_all / lab down. Every fault is undone in a finally.

The figures measured here (how long things hung, how soon a frozen destination was
noticed) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import domains, faults, guest_images, layout, lifecycle, machines, proc
from tests import labtools

pytestmark = pytest.mark.lab

HANG_S = 3.0  # a call that has not answered within this is taken as hanging
ANSWER_S = 20.0  # a healthy host answers well within this, even on a busy machine
BANDWIDTH_MIB_S = 8


# --- helpers -------------------------------------------------------------------------


def _virsh_answers(host: layout.LabHost, timeout: float) -> tuple[bool, float]:
    """(answered, seconds): ``virsh list`` against the host, killed after timeout."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["virsh", "-q", "-c", host.libvirt_uri, "list", "--name"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return True, time.monotonic() - started


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as handle:
        raw = handle.read()
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _qemu_pid(config: layout.LabConfig, host: layout.LabHost, vm: str) -> int:
    # libvirt writes it to /run/libvirt/qemu/<vm>.pid inside the host = hosts/<n>/run.
    return int((layout.host_dir(config, host) / "run" / "qemu" / f"{vm}.pid").read_text())


def _memory_processed(host: layout.LabHost, vm: str) -> int | None:
    """Bytes of RAM the running migration job of ``vm`` has sent, or None (no job)."""
    result = machines.virsh(host, "domjobinfo", vm, "--rawstats", check=False, timeout=30)
    match = re.search(r"^memory_processed\s*:\s*(\d+)", result.stdout, re.MULTILINE)
    return int(match.group(1)) if match else None


def _start_migration(source: layout.LabHost, destination: layout.LabHost) -> subprocess.Popen:
    """A bandwidth-limited p2p live migration of the Linux guest, in the background."""
    return subprocess.Popen(
        [
            "virsh",
            "-c",
            source.libvirt_uri,
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            layout.LINUX_VM_NAME,
            destination.libvirt_uri,
            "--bandwidth",
            str(BANDWIDTH_MIB_S),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop_migration(source: layout.LabHost, migration: subprocess.Popen) -> str:
    """Abort the migration if it still runs; returns virsh migrate's stderr."""
    if migration.poll() is None:
        machines.virsh(source, "domjobabort", layout.LINUX_VM_NAME, check=False, timeout=60)
    try:
        _, err = migration.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        migration.kill()
        _, err = migration.communicate()
    return err


def _nft_table_names() -> set[str]:
    """Independent of lab.faults: the names in ``nft list tables``."""
    out = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("table ")}


def _addresses_in(text: str) -> set[str]:
    return {m for m in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", text)}


@pytest.fixture
def linux_guest(lab_hosts, vm_uuids, lab_config) -> Iterator[labtools.VMPlacement]:
    """The filled Linux guest on exactly one host (before and after the test)."""
    uuid = vm_uuids[layout.LINUX_VM_NAME]
    labtools.normalize(lab_hosts, uuid)
    yield labtools.VMPlacement(lab_hosts, uuid)
    faults.heal_all(lab_config)
    faults.thaw_all(lab_config)
    labtools.normalize(lab_hosts, uuid)


# --- a frozen libvirtd -----------------------------------------------------------------


def test_frozen_libvirtd_hangs_its_clients_but_not_its_guests(
    lab_hosts, lab_config, linux_guest
) -> None:
    host = linux_guest.source
    others = [h for h in lab_hosts if h.name != host.name]
    qemu = _qemu_pid(lab_config, host, layout.LINUX_VM_NAME)
    domid = machines.virsh(host, "domid", layout.LINUX_VM_NAME).stdout.strip()
    assert _virsh_answers(host, ANSWER_S)[0]

    with faults.frozen_libvirtd(host) as pid:
        assert pid == proc.libvirtd_pid(host)
        assert proc.stopped(pid)

        answered, hung = _virsh_answers(host, HANG_S)
        assert not answered, f"virsh answered a frozen libvirtd after {hung:.1f} s"
        print(f"\nvirsh against a frozen libvirtd: no answer within {hung:.1f} s")

        # Its QEMU is not stopped and keeps using CPU (the guest rewrites its RAM).
        assert proc.alive(qemu) and not proc.stopped(qemu)
        before = _cpu_ticks(qemu)
        # (Polled: on a machine busy with other guests QEMU may wait for a core.)
        labtools.wait_for(
            lambda: _cpu_ticks(qemu) > before,
            timeout=15,
            what="QEMU to make progress while its libvirtd is frozen",
            interval=0.5,
        )
        assert proc.alive(qemu) and not proc.stopped(qemu)

        # Only this host is frozen.
        for other in others:
            assert _virsh_answers(other, ANSWER_S)[0], other.name

    assert not proc.stopped(pid)
    answered, took = _virsh_answers(host, ANSWER_S)
    assert answered
    print(f"virsh after thaw answered in {took:.2f} s")
    # The very same domain ran through it: not restarted, same QEMU.
    assert machines.virsh(host, "domid", layout.LINUX_VM_NAME).stdout.strip() == domid
    assert _qemu_pid(lab_config, host, layout.LINUX_VM_NAME) == qemu
    assert labtools.domstate(host, layout.LINUX_VM_NAME) == "running"


def test_freeze_thaw_functions_and_the_context_manager_always_thaws(lab_hosts, lab_config) -> None:
    host = lab_hosts[-1]
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with faults.frozen_libvirtd(host) as pid:
                assert proc.stopped(pid)
                raise RuntimeError("boom")
        assert not proc.stopped(pid)
        assert _virsh_answers(host, ANSWER_S)[0]

        pid = faults.freeze_libvirtd(host)
        assert proc.stopped(pid)
        assert not _virsh_answers(host, HANG_S)[0]
        assert faults.thaw_libvirtd(host) == pid
        assert not proc.stopped(pid)
        assert _virsh_answers(host, ANSWER_S)[0]

        # thaw_all continues every frozen libvirtd of the lab, and only those.
        frozen = sorted(faults.freeze_libvirtd(h) for h in lab_hosts[:2])
        assert sorted(faults.thaw_all(lab_config)) == frozen
        assert all(not proc.stopped(p) for p in frozen)
        assert faults.thaw_all(lab_config) == []
    finally:
        faults.thaw_all(lab_config)


def test_frozen_destination_is_noticed_by_a_running_p2p_migration(
    lab_hosts, lab_config, linux_guest
) -> None:
    """With the lab's keepalive (2 s x 2) the source's libvirtd drops a frozen
    destination within seconds (libvirt's default 5 s x 5 would take ~30 s)."""
    domains.wait_for_console(lab_config, guest_images.MARKER_FILLED, timeout=180)
    source = linux_guest.source
    destination = linux_guest.other(source)
    migration = _start_migration(source, destination)
    try:
        labtools.wait_for(
            lambda: (_memory_processed(source, layout.LINUX_VM_NAME) or 0) > 2 << 20,
            60,
            "the migration to send data",
        )
        with faults.frozen_libvirtd(destination):
            frozen_at = time.monotonic()
            labtools.wait_for(
                lambda: migration.poll() is not None,
                30,
                "virsh migrate to give up on the frozen destination",
            )
            noticed = time.monotonic() - frozen_at
            # Decided while the destination is still frozen: the source alone noticed.
            assert labtools.domstate(source, layout.LINUX_VM_NAME) == "running"
        err = _stop_migration(source, migration)
        print(f"\nfrozen destination noticed after {noticed:.1f} s: {err.strip()}")
        assert migration.returncode != 0
        assert noticed < 15, f"took {noticed:.1f} s: keepalive settings not in effect?"
    finally:
        _stop_migration(source, migration)
    # The destination (thawed) drops its half-received incoming domain by itself.
    labtools.wait_for(
        lambda: labtools.domstate(destination, linux_guest.uuid) in (None, "shut off"),
        60,
        "the destination to drop its incoming domain",
    )
    assert labtools.running_on(lab_hosts, linux_guest.uuid) == [source.name]


# --- a cut control plane -------------------------------------------------------------


def test_control_plane_cut_isolates_one_host_and_heals(lab_hosts, lab_config) -> None:
    host = lab_hosts[-1]
    others = [h for h in lab_hosts if h.name != host.name]
    table = faults.cut_table_name(host, faults.Plane.CONTROL)
    assert table.startswith(lab_config.name_prefix + "_")
    assert table not in _nft_table_names()

    # An ssh connection established before the cut: the server has sent its banner
    # and waits for ours before it sends its key exchange.
    established = socket.create_connection((host.address, layout.SSH_PORT), timeout=10)
    try:
        assert established.recv(256).startswith(b"SSH-2.0-")
        with faults.cut_during(host, faults.Plane.CONTROL) as name:
            assert name == table
            assert table in _nft_table_names()
            rules = faults.table_ruleset(table)
            assert "hook output" in rules
            assert _addresses_in(rules) == {host.address}
            assert all(ipaddress.IPv4Address(a).is_loopback for a in _addresses_in(rules))

            # The established connection stalls ...
            established.sendall(b"SSH-2.0-labfaults\r\n")
            established.settimeout(HANG_S)
            with pytest.raises(socket.timeout):
                established.recv(4096)
            # ... new ones to libvirt and ssh hang ...
            answered, hung = _virsh_answers(host, HANG_S)
            assert not answered, f"virsh reached a cut-off host after {hung:.1f} s"
            with pytest.raises(OSError):
                socket.create_connection((host.address, layout.SSH_PORT), timeout=HANG_S)
            # ... the other hosts answer ...
            for other in others:
                assert _virsh_answers(other, ANSWER_S)[0], other.name
            # ... and the host itself is fine: its libvirtd runs, not stopped.
            pid = proc.libvirtd_pid(host)
            assert pid is not None and not proc.stopped(pid)
            dropped = re.search(r"counter packets (\d+)", faults.table_ruleset(table))
            assert dropped and int(dropped.group(1)) > 0
            print(f"\nvirsh against a cut-off host: no answer within {hung:.1f} s")

        assert table not in _nft_table_names()
        # The stalled connection resumes by TCP retransmission: the key exchange arrives.
        healed_at = time.monotonic()
        established.settimeout(60)
        assert len(established.recv(4096)) > 0
        print(f"stalled ssh connection resumed {time.monotonic() - healed_at:.1f} s after heal")
        answered, took = _virsh_answers(host, ANSWER_S)
        assert answered
        print(f"virsh after heal answered in {took:.2f} s")
    finally:
        established.close()
        faults.heal(host, faults.Plane.CONTROL)


def test_explicit_cut_and_heal_are_idempotent(lab_hosts) -> None:
    host = lab_hosts[-1]
    try:
        assert faults.cut(host, faults.Plane.CONTROL) == faults.cut(host, faults.Plane.CONTROL)
        tables = [
            t for t in _nft_table_names() if t == faults.cut_table_name(host, faults.Plane.CONTROL)
        ]
        assert len(tables) == 1
        assert not _virsh_answers(host, HANG_S)[0]
        assert faults.heal(host, faults.Plane.CONTROL) is True
        assert faults.heal(host, faults.Plane.CONTROL) is False
        assert _virsh_answers(host, ANSWER_S)[0]
    finally:
        faults.heal(host, faults.Plane.CONTROL)


# --- a cut data plane ----------------------------------------------------------------


def test_data_plane_cut_stalls_a_live_migration_until_healed(
    lab_hosts, lab_config, linux_guest
) -> None:
    domains.wait_for_console(lab_config, guest_images.MARKER_FILLED, timeout=180)
    source = linux_guest.source
    destination = linux_guest.other(source)
    vm = layout.LINUX_VM_NAME
    migration = _start_migration(source, destination)
    try:
        labtools.wait_for(
            lambda: (_memory_processed(source, vm) or 0) > 2 << 20,
            60,
            "the migration to send data",
        )
        with faults.cut_during(destination, faults.Plane.DATA) as table:
            rules = faults.table_ruleset(table)
            assert _addresses_in(rules) == {destination.address}
            assert f"{layout.MIGRATION_PORT_MIN}-{layout.MIGRATION_PORT_MAX}" in rules

            # Socket buffers drain first; then not one byte more may get through.
            samples = [_memory_processed(source, vm)]

            def settled() -> bool:
                time.sleep(1)
                samples.append(_memory_processed(source, vm))
                return samples[-1] == samples[-2]

            labtools.wait_for(settled, 15, "the migration to stall", interval=0)
            stalled_at = samples[-1]
            time.sleep(6)
            assert _memory_processed(source, vm) == stalled_at, "data got through the cut"
            assert migration.poll() is None, "the migration ended during the cut"
            # Only the data plane is cut: the destination's libvirt still answers.
            assert _virsh_answers(destination, ANSWER_S)[0]
            dropped = re.search(r"counter packets (\d+)", faults.table_ruleset(table))
            assert dropped and int(dropped.group(1)) > 0
            print(f"\nmigration stalled at {stalled_at / 2**20:.1f} MiB for 6 s")

        assert table not in _nft_table_names()
        healed_at = time.monotonic()
        labtools.wait_for(
            lambda: (_memory_processed(source, vm) or 0) > stalled_at,
            30,
            "the migration to resume after heal",
        )
        print(f"migration resumed {time.monotonic() - healed_at:.1f} s after heal")
        # Guest RAM is rewritten as fast as the bandwidth limit sends it: it would
        # not converge; abort it.
        assert migration.poll() is None
        err = _stop_migration(source, migration)
        assert migration.returncode != 0 and "abort" in err.lower(), err
    finally:
        _stop_migration(source, migration)
    assert labtools.running_on(lab_hosts, linux_guest.uuid) == [source.name]


# --- nothing survives ----------------------------------------------------------------


def test_heal_all_removes_every_table_of_the_lab_and_only_those(lab_hosts, lab_config) -> None:
    # A host of another lab with the same name prefix, on an address nothing uses.
    stranger = layout.LabHost(
        name=f"{lab_config.name_prefix}-9",
        address=layout.host_address(lab_config, len(lab_hosts) + 1),
        libvirt_uri="",
        ssh_port=layout.SSH_PORT,
        ssh_user="",
        ssh_password="",
        running=False,
    )
    if any(proc.listening(stranger.address, port) for port in (16509, 22)):
        pytest.fail(f"{stranger.address} is in use: no room for a stranger lab host")
    ours = set()
    try:
        for host in lab_hosts:
            ours.add(faults.cut(host, faults.Plane.DATA))
            ours.add(faults.cut(host, faults.Plane.CONTROL))
        theirs = faults.cut(stranger, faults.Plane.DATA)
        assert len(ours) == 2 * len(lab_hosts)
        assert ours | {theirs} <= _nft_table_names()
        assert set(faults.lab_tables(lab_config)) == ours

        assert set(faults.heal_all(lab_config)) == ours
        assert not ours & _nft_table_names()
        assert faults.lab_tables(lab_config) == []
        assert theirs in _nft_table_names(), "heal_all removed another lab's table"
        assert all(_virsh_answers(h, ANSWER_S)[0] for h in lab_hosts)
    finally:
        faults.heal_all(lab_config)
        faults.heal(stranger, faults.Plane.DATA)
    assert theirs not in _nft_table_names()


def test_lab_down_removes_the_labs_tables(lab_hosts, lab_config, tmp_path: Path) -> None:
    """lifecycle.down heals first. Shown on a lab of its own without processes (downing the
    session's lab would stop it for the other tests): one host directory, prefix
    'tfaultdown', an address of this lab's range that nothing listens on."""
    config = layout.LabConfig(
        root=tmp_path / "lab",
        image_cache=tmp_path / "images",
        first_address=layout.host_address(lab_config, len(lab_hosts) + 1),
        name_prefix="tfaultdown",
    )
    if any(proc.listening(config.first_address, port) for port in (16509, 22)):
        pytest.fail(f"{config.first_address} is in use: this test needs it free")
    (layout.host_dir(config, "tfaultdown-1") / "state").mkdir(parents=True)
    (host,) = machines.status(config)
    tables = {faults.cut(host, faults.Plane.DATA), faults.cut(host, faults.Plane.CONTROL)}
    try:
        assert tables <= _nft_table_names()
        lifecycle.down(config)
        assert not tables & _nft_table_names()
    finally:
        faults.heal_all(config)
