"""Nothing node-local (docs/nodes.md): the portal's key pairs live in the database, and
each node's data folder is a cache rebuilt from it (0600 files, 0700 folders). No host
needed: two "nodes" here are two data folders against one test database."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from hosts import system_checks
from hosts.access import credentials, ssh, ssh_services, tls, tls_services
from hosts.access.models import CredentialKind, PortalCredential
from hosts.models import Host
from migrations_app.models import Migration
from migrations_app.worker.reconciler import migrations_reconcile

pytestmark = pytest.mark.django_db


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def _node(settings, folder: Path) -> Path:
    """Point this process at `folder` as its data folder's ssh and tls files."""
    settings.SSH_KEY_PATH = folder / "ssh" / "id_ed25519"
    settings.SSH_KNOWN_HOSTS_PATH = folder / "ssh" / "known_hosts"
    settings.SSH_COMMAND_PATH = folder / "ssh" / "portal-ssh"
    settings.SSH_SUDO_COMMAND_PATH = folder / "ssh" / "portal-ssh-sudo"
    settings.TLS_CLIENT_DIR = folder / "tls" / "client"
    settings.TLS_CA_DIR = folder / "tls" / "ca"
    return folder


@pytest.fixture
def node_a(settings, tmp_path) -> Path:
    return _node(settings, tmp_path / "node-a")


def _files(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Every file and folder under `folder`: relative path -> (mode, content)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        found[str(path.relative_to(folder))] = (
            _mode(path),
            b"" if path.is_dir() else path.read_bytes(),
        )
    return found


def _ssh_host(name: str, address: str, key: str) -> Host:
    return Host.objects.create(
        name=name, address=address, transport="ssh", ssh_user="root", ssh_host_key=key
    )


def test_the_ssh_key_is_made_once_stored_encrypted_and_materialised_0600(node_a):
    key = ssh_services.portal_public_key()
    row = PortalCredential.objects.get(kind=CredentialKind.SSH_KEY)
    private = key.private_path.read_bytes()
    assert b"PRIVATE KEY" in private
    assert b"PRIVATE KEY" not in row.private_encrypted.encode()
    assert private.decode() not in row.private_encrypted
    assert row.public == key.public_line and row.fingerprint == key.fingerprint
    assert _mode(key.private_path) == "0o600"
    assert _mode(key.private_path.parent) == "0o700"
    assert key.private_path.with_suffix(".pub").read_text() == f"{key.public_line}\n"
    assert ssh_services.portal_public_key() == key
    assert PortalCredential.objects.count() == 1
    event = AuditEvent.objects.get(event_type="host.portal_credential_stored")
    assert event.after == {"kind": "ssh_key", "fingerprint": key.fingerprint}
    assert "PRIVATE" not in str(event.after) + str(event.detail)


def test_a_second_node_with_an_empty_data_folder_gets_the_same_files(settings, tmp_path):
    _node(settings, tmp_path / "a")
    _ssh_host("hv1", "192.0.2.41", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIhv1")
    host = _ssh_host("hv2", "192.0.2.42", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIhv2")
    ssh_services.ssh_files_ensure(host)
    tls_services.portal_client()
    on_a = _files(tmp_path / "a")

    node_b = _node(settings, tmp_path / "b")
    assert not node_b.exists()
    ssh_services.ssh_files_ensure(host)
    tls_services.portal_client()
    on_b = _files(node_b)
    # The wrappers name their own node's known_hosts; everything else is the same.
    for name in ("ssh/portal-ssh", "ssh/portal-ssh-sudo"):
        assert on_b[name][1] == on_a[name][1].replace(b"/a/ssh/", b"/b/ssh/")
        assert on_b.pop(name)[0] == on_a.pop(name)[0] == "0o700"
    assert on_b == on_a
    assert sorted(on_b) == [
        "ssh",
        "ssh/id_ed25519",
        "ssh/id_ed25519.pub",
        "ssh/known_hosts",
        "tls",
        "tls/client",
        "tls/client/cacert.pem",
        "tls/client/clientcert.pem",
        "tls/client/clientkey.pem",
    ]
    modes = {name: mode for name, (mode, _content) in on_b.items()}
    assert modes["ssh"] == modes["tls"] == modes["tls/client"] == "0o700"
    assert modes["ssh/id_ed25519"] == modes["ssh/known_hosts"] == "0o600"
    assert modes["tls/client/clientkey.pem"] == "0o600"
    assert on_b["ssh/known_hosts"][1].decode().splitlines() == [
        "192.0.2.41 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIhv1",
        "192.0.2.42 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIhv2",
    ]
    # The CA's key is never written to a data folder: it is only in memory when signing.
    assert not list(tmp_path.rglob("cakey.pem"))


def test_stale_or_loosened_files_are_rebuilt_from_the_database(node_a, settings):
    host = _ssh_host("hv1", "192.0.2.41", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIold")
    ssh_services.ssh_files_ensure(host)
    key = settings.SSH_KEY_PATH.read_bytes()
    settings.SSH_KEY_PATH.write_bytes(b"another node's leftover")
    os.chmod(settings.SSH_KEY_PATH, 0o644)
    settings.SSH_COMMAND_PATH.unlink()
    # Another node accepted a changed host key: only the database knows.
    Host.objects.filter(pk=host.pk).update(ssh_host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAInew")
    ssh_services.ssh_files_ensure(host)
    assert settings.SSH_KEY_PATH.read_bytes() == key
    assert _mode(settings.SSH_KEY_PATH) == "0o600"
    assert _mode(settings.SSH_COMMAND_PATH) == "0o700"
    assert settings.SSH_KNOWN_HOSTS_PATH.read_text() == (
        "192.0.2.41 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAInew\n"
    )

    client = tls_services.portal_client()
    (client.folder / "clientkey.pem").write_text("stale")
    os.chmod(client.folder, 0o755)
    again = tls_services.portal_client()
    assert again.cert == client.cert
    assert b"PRIVATE KEY" in (client.folder / "clientkey.pem").read_bytes()
    assert _mode(client.folder) == "0o700"


def test_file_sync_writes_only_what_changed(tmp_path):
    path = tmp_path / "f" / "secret"
    assert credentials.file_sync(path, b"one") is True
    assert credentials.file_sync(path, b"one") is False
    os.chmod(path, 0o666)
    assert credentials.file_sync(path, b"one") is False
    assert _mode(path) == "0o600"
    assert credentials.file_sync(path, b"two", mode=0o644) is True
    assert (path.read_bytes(), _mode(path), _mode(path.parent)) == (b"two", "0o644", "0o700")
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]  # no temporary left


def test_a_key_file_of_an_existing_data_folder_is_adopted_not_replaced(node_a, settings):
    pem, public_line = ssh.portal_key_generate()
    settings.SSH_KEY_PATH.parent.mkdir(parents=True)
    settings.SSH_KEY_PATH.write_bytes(pem)
    ca = tls.ca_create()
    settings.TLS_CA_DIR.mkdir(parents=True)
    (settings.TLS_CA_DIR / "cakey.pem").write_bytes(tls.key_pem(ca.key))
    (settings.TLS_CA_DIR / "cacert.pem").write_text(ca.cert_pem)

    assert ssh_services.portal_public_key().public_line == public_line
    assert tls_services.portal_ca().fingerprint == ca.fingerprint
    details = sorted(
        e.detail["how"]
        for e in AuditEvent.objects.filter(event_type="host.portal_credential_stored")
    )
    assert details == [
        f"adopted from {settings.SSH_KEY_PATH}",
        f"adopted from {settings.TLS_CA_DIR}",
    ]


def test_import_and_rotation_change_every_nodes_files(settings, tmp_path, capsys):
    _node(settings, tmp_path / "a")
    ssh_services.portal_public_key()
    first_client = tls_services.portal_client()
    given = tmp_path / "given_key"
    pem, public_line = ssh.portal_key_generate("deployment")
    given.write_bytes(pem)

    call_command("portal_credentials", "import-ssh-key", str(given))
    call_command("portal_credentials", "rotate-tls-ca")
    _node(settings, tmp_path / "b")
    # (the comment of a key file is not kept: the portal names its key itself)
    assert ssh_services.portal_public_key().public_line.split()[:2] == public_line.split()[:2]
    assert settings.SSH_KEY_PATH.read_bytes() == pem
    renewed = tls_services.portal_client()
    ca = tls_services.portal_ca()
    assert renewed.cert != first_client.cert and tls.issued_by(renewed.cert, ca.cert)
    assert (renewed.folder / "cacert.pem").read_text() == ca.cert_pem

    call_command("portal_credentials", "status")
    out = capsys.readouterr().out
    assert "ssh_key: SHA256:" in out and "readable" in out and "PRIVATE" not in out
    hows = list(
        AuditEvent.objects.filter(event_type="host.portal_credential_stored")
        .order_by("id")
        .values_list("detail__how", flat=True)
    )
    assert hows[-3:] == [f"imported from {given}", "rotated", "renewed"]


def test_a_node_with_another_secret_key_is_told_what_to_do(node_a, settings):
    ssh_services.portal_public_key()
    settings.SECRET_KEY = "not the key the first node had"
    with pytest.raises(credentials.CredentialUnreadable, match="same PORTAL_SECRET_KEY"):
        ssh_services.portal_public_key()


def test_two_nodes_racing_to_make_the_key_keep_the_first_one_stored(node_a, monkeypatch):
    stored = ssh_services.portal_public_key()
    # A node that read "none yet" before the first one stored its key still gets the
    # stored one: the unique kind refuses its row, and it reads the winner's.
    made = []

    def make() -> credentials.Material:
        pem, line = ssh.portal_key_generate()
        made.append(line)
        return credentials.Material(line, pem, ssh.HostKey.from_line(line).fingerprint)

    original_get = credentials.credential_get
    calls = []

    def first_sees_nothing(kind):
        calls.append(kind)
        return None if len(calls) == 1 else original_get(kind)

    monkeypatch.setattr(credentials, "credential_get", first_sees_nothing)
    won = credentials.credential_ensure(CredentialKind.SSH_KEY, make)
    assert made and won.public == stored.public_line != made[0]
    assert PortalCredential.objects.count() == 1


def test_a_key_file_named_by_the_environment_is_refused(monkeypatch):
    assert system_checks.ssh_key_not_a_file_of_the_deployment(None) == []
    monkeypatch.setenv("PORTAL_SSH_KEY_PATH", "/etc/portal/id_ed25519")
    errors = system_checks.ssh_key_not_a_file_of_the_deployment(None)
    assert [e.id for e in errors] == ["hosts.E001"]
    assert "import-ssh-key /etc/portal/id_ed25519" in errors[0].hint
    assert django_settings.SSH_KEY_PATH == Path(django_settings.DATA_DIR) / "ssh" / "id_ed25519"


def test_the_reconciler_trusts_heartbeats_only_not_pids(admin_user, settings):
    """A worker on another node has a pid that means nothing here: a migration whose
    owner names a process that does not exist on this machine, but whose heartbeat is
    fresh, is left alone; one whose heartbeat is stale is taken over."""
    settings.MIGRATION_STALE_AFTER_S = 30
    dead = subprocess.Popen(["true"])
    dead.wait()
    source = Host.objects.create(name="src", address="192.0.2.30")
    destination = Host.objects.create(name="dst", address="192.0.2.31")

    def running(heartbeat_age_s: float) -> Migration:
        return Migration.objects.create(
            vm_uuid=uuid.uuid4(),
            vm_name="web-1",
            source=source,
            destination=destination,
            requested_by=admin_user,
            requested_by_name=admin_user.username,
            status="checking",
            claimed_by=f"{socket.gethostname()}:{dead.pid}",
            claim_epoch=1,
            heartbeat_at=timezone.now() - dt.timedelta(seconds=heartbeat_age_s),
            max_downtime_ms=500,
            timeout_s=600,
        )

    alive_elsewhere, stale = running(1), running(120)
    settled = migrations_reconcile(wait_for_abort_s=0)
    assert settled == [stale.pk]
    alive_elsewhere.refresh_from_db()
    assert (alive_elsewhere.status, alive_elsewhere.claim_epoch) == ("checking", 1)
    stale.refresh_from_db()
    assert stale.status == "failed" and stale.failure_reason == "worker_lost"
