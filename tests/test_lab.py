"""Self-test of the lab itself (lab.lifecycle): one real host, apart from the suite's lab.

It runs on 127.0.0.20 with its own root and name prefix, so neither the suite's lab
(tests/lab_session.py) nor a running demo lab is touched.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from lab import domains, guest_images, layout, lifecycle, machines, proc
from tests import lab_session

pytestmark = pytest.mark.lab

BASE_DIR = Path(__file__).resolve().parent.parent
SELF_ADDRESS = os.environ.get("TEST_LAB_SELF_ADDRESS", "127.0.0.20")


def _data_dir() -> Path:
    try:
        from django.conf import settings

        return Path(settings.DATA_DIR)
    except Exception:  # Django not configured: same default as the settings
        return Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()


@pytest.fixture(scope="module")
def self_lab() -> Iterator[layout.LabConfig]:
    if os.geteuid() != 0:
        pytest.fail(
            "LAB SELF-TEST NEEDS ROOT: the lab uses unshare, bind mounts, useradd and a "
            "system-mode libvirtd per host. Run the suite as root (CI does).",
            pytrace=False,
        )
    data = _data_dir()
    config = layout.LabConfig(
        root=data / "test-lab-self",
        image_cache=Path(os.environ.get("TEST_LAB_IMAGE_CACHE", data / "guest-images")),
        first_address=SELF_ADDRESS,
        name_prefix="selftest",
        private_paths=lab_session.PRIVATE_PATHS,
        guest_memory_mib=192,
        guest_fill_mib=48,
        guest_dirty_mib_s=4,
        start_vms=True,
    )
    lifecycle.down(config)  # leftovers of an interrupted run
    shutil.rmtree(config.root, ignore_errors=True)
    yield config
    lifecycle.down(config)
    shutil.rmtree(config.root, ignore_errors=True)


def _processes_mentioning(root: Path) -> list[str]:
    """Independent of lab.proc: any process whose command line or cwd names root."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue  # gone, or a zombie
        if str(root) in cmdline or cwd.startswith(str(root)):
            found.append(f"{entry}: {cmdline} (cwd {cwd})")
    return found


def test_lab_up_is_idempotent_and_down_leaves_nothing(self_lab: layout.LabConfig) -> None:
    config = self_lab
    hosts = lifecycle.up(config, hosts=1)

    assert [(h.name, h.address, h.running) for h in hosts] == [("selftest-1", SELF_ADDRESS, True)]
    host = hosts[0]
    assert host.libvirt_uri == f"qemu+tcp://{SELF_ADDRESS}/system"
    assert "libvirt" in machines.virsh(host, "version").stdout.lower()
    for vm in (layout.LINUX_VM_NAME, layout.TINY_VM_NAME):
        assert machines.virsh(host, "domstate", vm).stdout.strip() == "running", vm
    pools = machines.virsh(host, "pool-list", "--name").stdout.split()
    assert {layout.SHARED_POOL, layout.PRIVATE_POOL} <= set(pools)

    # The Linux guest reached userspace and filled its memory.
    # The whole line: the serial console writes it a byte at a time.
    domains.wait_for_console(config, f"{guest_images.MARKER_FILLED} 48 MiB", timeout=90)
    assert "LAB-GUEST filled 48 MiB" in layout.console_log_path(config).read_text()

    # The ssh user logs in with its password and reaches this host's libvirt.
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        host.address,
        port=host.ssh_port,
        username=host.ssh_user,
        password=host.ssh_password,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, out, _ = client.exec_command("virsh -c qemu:///system list --name", timeout=30)
        assert layout.LINUX_VM_NAME in out.read().decode()
    finally:
        client.close()

    # A second up changes nothing: same libvirtd, same (not restarted) domains.
    pid = proc.libvirtd_pid(host)
    domid = machines.virsh(host, "domid", layout.LINUX_VM_NAME).stdout.strip()
    started = time.monotonic()
    again = lifecycle.up(config, hosts=1)
    assert time.monotonic() - started < 10
    assert again == hosts
    assert proc.libvirtd_pid(host) == pid
    assert machines.virsh(host, "domid", layout.LINUX_VM_NAME).stdout.strip() == domid

    # A killed libvirtd comes back in the same namespace and finds its QEMUs again.
    machines.kill_libvirtd(host)
    assert not machines.status(config)[0].running
    machines.start_libvirtd(host, config)
    assert proc.libvirtd_pid(host) not in (None, pid)
    assert machines.virsh(host, "domid", layout.LINUX_VM_NAME).stdout.strip() == domid
    assert machines.virsh(host, "domstate", layout.TINY_VM_NAME).stdout.strip() == "running"

    # The Linux guest checks its own memory on request (an NMI), and says so.
    answer = machines.guest_memory_check(config, host, layout.LINUX_VM_NAME)
    assert " ok " in answer, answer

    lifecycle.down(config)

    assert _processes_mentioning(config.root) == []
    assert proc.lab_processes(config) == []
    with open("/proc/self/mountinfo") as handle:
        assert [line for line in handle if str(config.root) in line] == []
    assert machines.virsh(host, "version", check=False, timeout=30).returncode != 0
    assert [h.running for h in machines.status(config)] == [False]
