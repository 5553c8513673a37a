"""What a lab host needs on disk before its namespace starts (idempotent, run on `lab up`).

Inside a host the portal's data folder is an empty tmpfs; only shared storage, boot
files, consoles and the host's own folder are mounted back, as NFS would show them.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from string import Template

from lab import layout

LIBVIRTD = "/usr/sbin/libvirtd"
BINDFS = "/usr/bin/bindfs"
SSHD = "/usr/sbin/sshd"
SSH_GROUP = "libvirt"
FILES = Path(__file__).resolve().with_name("files")
# Per-folder modes (the rest are 0755): root's home and sudoers are private.
_BIND_MODES = {"root": 0o700, "sudoers": 0o750}


def prepare_host(config: layout.LabConfig, index: int) -> None:
    name = layout.host_name(config, index)
    address = layout.host_address(config, index)
    hdir = layout.host_dir(config, name)
    state = hdir / "state"
    for sub in (*layout.BIND_MOUNTS, "lib/images"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
        (hdir / sub).chmod(_BIND_MODES.get(sub, 0o755))
    (hdir / "home").mkdir(exist_ok=True)
    (hdir / "home-sudo").mkdir(exist_ok=True)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = state / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
            check=True,
            capture_output=True,
        )

    tls_only = index in config.tls_hosts
    host_uuid = _stored(state / "host_uuid", lambda: str(uuid.uuid4()), 0o644)
    values = {"address": address, "host_uuid": host_uuid, "state": state, "fifo": state / "control"}
    values |= {"listen_tls": int(tls_only), "listen_tcp": int(not tls_only), "group": SSH_GROUP}
    values |= {"tcp_port": layout.LIBVIRT_TCP_PORT, "ssh_port": layout.SSH_PORT}
    values |= {"port_min": layout.MIGRATION_PORT_MIN, "port_max": layout.MIGRATION_PORT_MAX}
    for template, target in (
        ("libvirtd.conf", hdir / "etc" / "libvirtd.conf"),
        ("qemu.conf", hdir / "etc" / "qemu.conf"),
        ("sshd_config", state / "sshd_config"),
        ("systemctl", hdir / "sbin" / "systemctl"),
    ):
        text = Template((FILES / template).read_text()).safe_substitute(values)
        _write_if_changed(target, text)
    (hdir / "sbin" / "systemctl").chmod(0o755)
    spec = _holder_spec(config, hdir, tls_only)
    _write_if_changed(state / "holder.json", json.dumps(spec, indent=2) + "\n")

    user, sudo_user = layout.ssh_user_for(address), layout.sudo_user_for(address)
    for login, secret, home, comment, libvirt in (
        (user, "ssh_password", "home", f"lab host {name}", True),
        (sudo_user, "sudo_password", "home-sudo", f"lab host {name} (sudo)", False),
    ):
        password = _stored(state / secret, lambda: secrets.token_urlsafe(12), 0o600)
        _ensure_login(login, password, hdir / home, comment, libvirt=libvirt)
    # Like an administrator's account on a real host: both may sudo without a password,
    # on this host only (the file is /etc/sudoers.d inside its namespace).
    _write_if_changed(
        hdir / "sudoers" / "lab-users",
        f"# Written by lab.host_setup for {name}.\n{user} ALL=(ALL) NOPASSWD: ALL\n"
        f"{sudo_user} ALL=(ALL) NOPASSWD: ALL\n",
    )
    (hdir / "sudoers" / "lab-users").chmod(0o440)


def _holder_spec(config: layout.LabConfig, hdir: Path, tls_only: bool) -> dict:
    """What lab/holder.py mounts, hides and starts in the host's namespace."""
    state = hdir / "state"
    shared = layout.shared_storage_dir(config)
    hidden = config.hidden_paths
    kept = [config.root / "boot", config.root / "console", hdir]
    keep = [[str(p), str(p)] for p in kept if any(p.is_relative_to(h) for h in hidden)]
    # The shared folder (the lab's "NFS") is exported from a staging point inside the
    # hiding tmpfs, so that only the FUSE mount below sits at its path: libvirt takes
    # the first mount it finds at the longest matching path as the disk's filesystem.
    export = shared
    hiding = next((h for h in hidden if shared.is_relative_to(h)), None)
    if hiding is not None:
        export = hiding / ".lab-nfs-export"
        keep.append([str(shared), str(export)])
    sshd = [SSHD, "-D", "-f", str(state / "sshd_config"), "-E", str(layout.sshd_log_path(hdir))]
    return {
        "mounts": [[str(hdir / sub), target] for sub, target in layout.BIND_MOUNTS.items()],
        "hide": [str(p) for p in hidden],
        "keep": keep,
        # libvirt migrates a disk without copying only on a shared filesystem, so inside
        # each host the shared folder is an uncached FUSE passthrough typed "fuse.glusterfs".
        "setup": [
            ["mkdir", "-p", str(shared)],
            [
                BINDFS,
                "-o",
                "subtype=glusterfs,fsname=lab-shared,allow_other,"
                "attr_timeout=0,entry_timeout=0,negative_timeout=0",
                str(export),
                str(shared),
            ],
        ],
        "fifo": str(state / "control"),
        "pid_file": str(state / "holder.pid"),
        "commands": {
            "libvirtd": {
                "argv": _libvirtd_argv(hdir, tls_only),
                "log": str(hdir / "log" / "libvirtd.stderr.log"),
            },
            "sshd": {"argv": sshd, "log": str(hdir / "log" / "sshd.stderr.log")},
        },
    }


def _libvirtd_argv(hdir: Path, tls_only: bool) -> list[str]:
    config = str(hdir / "etc" / "libvirtd.conf")
    argv = [LIBVIRTD, "--listen", "--config", config, "--pid-file", "/run/libvirt/libvirtd.pid"]
    if not tls_only:
        return argv
    # TLS-only: --listen (TLS) only once a server certificate is there; before that
    # the unix socket alone (reached over ssh). Decided at each (re)start.
    without = " ".join(a for a in argv if a != "--listen")
    return [
        "/bin/sh",
        "-c",
        f"if [ -s /etc/pki/libvirt/servercert.pem ]; then exec {' '.join(argv)}; "
        f"else exec {without}; fi",
    ]


def _ensure_login(
    user: str, password: str, home: Path, comment: str, *, libvirt: bool = True
) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        groups = ["--groups", SSH_GROUP] if libvirt else []
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                str(home),
                "--shell",
                "/bin/sh",
                *groups,
                "--comment",
                comment,
                user,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(user)
    if entry.pw_dir != str(home):
        # The same address may be used by another lab root at another time.
        subprocess.run(["usermod", "--home", str(home), user], check=True, capture_output=True)
    if libvirt and user not in grp.getgrnam(SSH_GROUP).gr_mem:
        subprocess.run(
            ["usermod", "--append", "--groups", SSH_GROUP, user], check=True, capture_output=True
        )
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)


def _stored(path: Path, make: Callable[[], str], mode: int) -> str:
    """A value generated once and kept (host uuid, ssh password)."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _write_if_changed(path: Path, content: str) -> None:
    if not path.exists() or path.read_text() != content:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
