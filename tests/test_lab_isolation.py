"""A lab host shares nothing with the portal, as a separate machine would not.

Checked from inside each host's own mount namespace (nsenter into its libvirtd): the
portal's ssh key, wrapper, database and secret key are not there, nor are the other
hosts' folders; the lab's shared storage and the host's own folders are. Needs root
and the lab (marker ``lab``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from hosts.access import ssh_services
from lab import layout, proc

pytestmark = pytest.mark.lab


def _in_host(host: layout.LabHost, *argv: str) -> subprocess.CompletedProcess[str]:
    pid = proc.libvirtd_pid(host)
    assert pid is not None, f"no libvirtd on {host.name}"
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", *argv], capture_output=True, text=True, timeout=30
    )


def test_no_host_can_read_the_portals_key_or_database(lab_hosts, lab_config, db):
    ssh_services.portal_public_key()  # the key exists in the portal's data folder...
    ssh_services.known_hosts_refresh()
    private_files = [
        Path(settings.SSH_KEY_PATH),
        Path(settings.SSH_COMMAND_PATH),
        Path(settings.SSH_KNOWN_HOSTS_PATH),
    ]
    for path in private_files:
        assert path.exists(), f"{path} should exist for the portal"
    for host in lab_hosts:
        for path in private_files:
            seen = _in_host(host, "cat", str(path))
            assert seen.returncode != 0, f"{host.name} can read {path}"
            assert "No such file" in seen.stderr
        # ...and as the host's own root, the data folder holds only what the lab shares.
        listed = _in_host(host, "ls", "-A", str(lab_config.root.parent)).stdout.split()
        # (.lab-nfs-export: where the shared folder is exported from, see lab.host_setup)
        assert set(listed) == {lab_config.root.name, ".lab-nfs-export"}, listed


def test_each_host_sees_shared_storage_and_only_its_own_folder(lab_hosts, lab_config):
    names = sorted(h.name for h in lab_hosts)
    shared = layout.shared_storage_dir(lab_config)
    marker = shared / "isolation-marker"
    marker.write_text("nfs\n")
    try:
        for host in lab_hosts:
            assert _in_host(host, "cat", str(marker)).stdout == "nfs\n"
            listed = _in_host(host, "ls", str(lab_config.root / "hosts")).stdout.split()
            assert listed == [host.name], f"{host.name} sees the folders of {listed}"
            # Root's home is the host's own: libvirtd's ~/.ssh is not the machine's.
            own_root = layout.host_dir(lab_config, host) / "root"
            (own_root / f"whoami-{host.name}").write_text(host.name)
            try:
                seen = _in_host(host, "ls", "/root").stdout.split()
                assert seen == [f"whoami-{host.name}"], f"{host.name}: /root holds {seen}"
            finally:
                (own_root / f"whoami-{host.name}").unlink()
    finally:
        marker.unlink()
    assert len(names) >= 2


def test_sudo_only_user_is_not_in_group_libvirt(lab_hosts):
    host = lab_hosts[0]
    groups = subprocess.run(["id", "-nG", host.sudo_user], capture_output=True, text=True)
    assert groups.returncode == 0 and "libvirt" not in groups.stdout.split()
    sudoers = _in_host(host, "cat", "/etc/sudoers.d/lab-users").stdout
    assert f"{host.sudo_user} ALL=(ALL) NOPASSWD: ALL" in sudoers
    # Outside the host's namespace the machine's sudoers do not name the lab users.
    assert host.sudo_user not in Path("/etc/sudoers").read_text()
