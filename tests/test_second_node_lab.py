"""A second portal node: an empty data folder, the same database, Redis and
PORTAL_SECRET_KEY, and nothing else (docs/nodes.md).

Node A is this test process (the session's data folder): it gives the portal ssh access
to two lab hosts with their passwords, and makes the portal's CA. Node B is other
processes with PORTAL_DATA_DIR pointing at a new empty folder: its task workers
(`manage.py run_workers`) run a migration over ssh to completion (libvirt's qemu+ssh
through node B's wrapper and known_hosts, paramiko sessions for the peer trust), and a
`manage.py shell` of node B issues TLS certificates to a host over ssh with the CA node
A made. Everything node B needed came from the database; what it wrote in its folder is
0600 files in 0700 folders. Needs root and the lab (marker ``lab``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from hosts.access import ssh_services, tls, tls_services
from hosts.access.models import PeerTrust
from hosts.models import Host
from lab import layout
from tests import labtools
from tests.labtools import request_migration, wait_final
from tests.processes import ROOT, Workers, subprocess_database_url

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]


def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` (relative path -> mode)."""
    return {
        str(path.relative_to(folder)): oct(path.stat().st_mode & 0o777)
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def node_b(tmp_path) -> dict[str, str]:
    """The environment of node B's processes: its own empty data folder, the shared
    database, Redis and secret key."""
    folder = tmp_path / "node-b-data"
    folder.mkdir(mode=0o700)
    return {
        "PORTAL_DATA_DIR": str(folder),
        "PORTAL_SECRET_KEY": str(settings.SECRET_KEY),
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": settings.REDIS_URL,
    }


def _node_b_manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_second_node_with_an_empty_data_folder_migrates_and_issues_over_ssh(
    api, linux_vm, lab_registered, lab_config, node_b, tmp_path
):
    source_lab = linux_vm.source
    destination_lab = linux_vm.other(source_lab)
    # Node A: ssh access to both hosts, set up with their passwords (used once).
    for lab_host in (source_lab, destination_lab):
        labtools.ssh_access(api, lab_registered[lab_host.name].pk, lab_host)
    node_a_key = ssh_services.portal_public_key()
    node_a_ca = tls_services.portal_ca()
    assert not PeerTrust.objects.exists()

    folder = Path(node_b["PORTAL_DATA_DIR"])
    assert list(folder.iterdir()) == []  # node B starts with nothing

    # Node B's workers run the migration: nobody else consumes the task queue here.
    workers = Workers(tmp_path / "node-b-workers.log", env=node_b)
    workers.start()
    try:
        migration_id = request_migration(api, linux_vm.uuid, remote_host=destination_lab.name)
        record = wait_final(migration_id, timeout=300)
        # (A test's own check, not the portal's: the worker that ran it was node B's.)
        pid = record.claimed_by.rpartition(":")[2]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"PORTAL_DATA_DIR={folder}".encode() in environ
    finally:
        workers.stop()
        with contextlib.suppress(ProcessLookupError):  # no child of node B outlives it
            os.killpg(workers.process.pid, signal.SIGKILL)
        print(workers.log.read_text()[-5000:])
    assert record.status == "succeeded", record.error
    assert labtools.where(linux_vm.hosts, linux_vm.uuid)[destination_lab.name] == "running"
    # Node B opened both hosts over qemu+ssh and set up the peer trust over paramiko.
    trust = PeerTrust.objects.get(
        source=lab_registered[source_lab.name], destination=lab_registered[destination_lab.name]
    )
    assert trust.verified_at is not None

    # Node B issues a host's TLS certificates over ssh, with node A's CA (no restart: the
    # session's hosts listen on tcp).
    issued_to = lab_registered[destination_lab.name]
    _node_b_manage(
        node_b,
        "shell",
        "-c",
        "from audit.services import Actor\n"
        "from hosts.access import tls_services\n"
        "from hosts.models import Host\n"
        f"host = Host.objects.get(pk={issued_to.pk})\n"
        "tls_services.host_tls_issue(\n"
        "    host=host, actor=Actor.system('node B'), restart_libvirtd=False\n"
        ")\n",
    )
    issued_to.refresh_from_db()
    assert issued_to.tls_ca_fingerprint == node_a_ca.fingerprint
    assert tls.issued_by(tls.load_certificate(issued_to.tls_server_cert), node_a_ca.cert)
    installed = layout.host_dir(lab_config, destination_lab) / "pki" / "CA" / "cacert.pem"
    assert installed.read_text().strip() == node_a_ca.cert_pem.strip()
    status = _node_b_manage(node_b, "portal_credentials", "status")
    assert f"ssh_key: {node_a_key.fingerprint}" in status and "NOT READABLE" not in status

    # What node B materialised: node A's key, the pinned host keys, 0600 / 0700 only.
    tree = _tree(folder)
    secret = {
        "ssh/id_ed25519",
        "ssh/known_hosts",
        "tls/client/clientkey.pem",
    }
    for name in secret:
        assert tree[name] == "0o600", (name, tree)
    for name in ("ssh", "tls", "tls/client"):
        assert tree[name] == "0o700", (name, tree)
    assert tree["ssh/portal-ssh"] == tree["ssh/portal-ssh-sudo"] == "0o700"
    assert tree["ssh/id_ed25519.pub"] == tree["tls/client/clientcert.pem"] == "0o644"
    assert {name for name in tree if name.startswith(("ssh", "tls"))} == {
        "ssh",
        "ssh/id_ed25519",
        "ssh/id_ed25519.pub",
        "ssh/known_hosts",
        "ssh/portal-ssh",
        "ssh/portal-ssh-sudo",
        "tls",
        "tls/client",
        "tls/client/cacert.pem",
        "tls/client/clientcert.pem",
        "tls/client/clientkey.pem",
    }, tree
    # Nothing else of note: no CA key, no secret key file, no SQLite database.
    assert not {"secret_key", "portal.sqlite3", "tls/ca", "tls/ca/cakey.pem"} & set(tree)
    assert (folder / "ssh/id_ed25519").read_bytes() == node_a_key.private_path.read_bytes()
    known = (folder / "ssh/known_hosts").read_text()
    for lab_host in (source_lab, destination_lab):
        pinned = Host.objects.get(name=lab_host.name).ssh_host_key
        assert f"{lab_host.address} {pinned}\n" in known
    client = tls.load_certificate((folder / "tls/client/clientcert.pem").read_text())
    assert tls.issued_by(client, node_a_ca.cert)
