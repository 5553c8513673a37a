"""Password-less ssh set-up against the lab hosts' real sshd, pinned host keys, and
migrations over qemu+ssh. Every secret used here is grepped for at the end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from audit.models import AuditEvent
from hosts.access import ssh
from hosts.access.ssh_services import REMOTE_USER_NEEDS
from hosts.models import Host
from lab import layout
from migrations_app.models import Migration
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import request_migration

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

# Every password a test in this module types; none may be found anywhere afterwards.
SECRETS_USED: set[str] = set()
SSHD_ADDRESS = os.environ.get("TEST_SSHD_ADDRESS", "127.0.0.61")
SSHD_PORT = 2222


def authorized_keys(lab_config, host: layout.LabHost) -> str:
    path = layout.host_dir(lab_config, host) / "home" / ".ssh" / "authorized_keys"
    return path.read_text() if path.exists() else ""


def lab_host_key(lab_config, host: layout.LabHost) -> ssh.HostKey:
    pub = layout.host_dir(lab_config, host) / "state" / "ssh_host_ed25519_key.pub"
    return ssh.HostKey.from_line(pub.read_text())


def set_up_access(api, host: Host, user: str, password: str):
    SECRETS_USED.add(password)
    return api.post(
        f"/api/hosts/{host.pk}/ssh-access/", {"user": user, "password": password}, format="json"
    )


@pytest.fixture
def destination(linux_vm, lab_registered):
    lab_dst = linux_vm.other(linux_vm.source)
    return lab_dst, lab_registered[lab_dst.name]


def test_key_push_is_idempotent_and_migrations_over_ssh_work(
    api, linux_vm, destination, lab_config
):
    lab_dst, host = destination
    portal_key = api.get("/api/ssh-key/").json()
    assert portal_key["public_key"].startswith("ssh-ed25519 ")
    assert oct(os.stat(settings.SSH_KEY_PATH).st_mode & 0o777) == "0o600"

    for _ in range(2):
        response = set_up_access(api, host, lab_dst.ssh_user, lab_dst.ssh_password)
        assert response.status_code == 200, response.json()
    lines = authorized_keys(lab_config, lab_dst).splitlines()
    assert lines.count(portal_key["public_key"]) == 1

    body = response.json()
    assert body["transport"] == "ssh"
    assert body["ssh_access_user"] == lab_dst.ssh_user
    assert body["libvirt_uri"] == f"qemu+ssh://{lab_dst.ssh_user}@{lab_dst.address}/system"
    assert body["ssh_host_key_fingerprint"] == lab_host_key(lab_config, lab_dst).fingerprint
    refreshed = api.post(f"/api/hosts/{host.pk}/refresh/").json()
    assert refreshed["status"] == "reachable", refreshed["last_error"]
    events = set(
        AuditEvent.objects.filter(target_id=str(host.pk)).values_list("event_type", flat=True)
    )
    assert {"host.host_key_recorded", "host.ssh_key_installed"} <= events

    source = linux_vm.source
    # Peer-to-peer over ssh: the portal gives the source a key of its own for the
    # destination, over its own ssh access to the source.
    source_host = Host.objects.get(name=source.name)
    assert set_up_access(api, source_host, source.ssh_user, source.ssh_password).status_code == 200
    # To the ssh host (direct), back from it (tunnelled), and to it again tunnelled.
    for remote, transport in ((lab_dst, "direct"), (source, "tunnelled"), (lab_dst, "tunnelled")):
        migration_id = request_migration(
            api, linux_vm.uuid, remote_host=remote.name, transport=transport, delete_source=True
        )
        status = migration_execute(migration_id=migration_id)
        assert status == "succeeded", Migration.objects.get(pk=migration_id).error
        assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {remote.name: "running"}


def test_migrate_with_user_and_password_sets_up_ssh_first(api, linux_vm, destination):
    lab_dst, host = destination
    source = linux_vm.source
    set_up_access(api, Host.objects.get(name=source.name), source.ssh_user, source.ssh_password)
    SECRETS_USED.add(lab_dst.ssh_password)
    migration_id = request_migration(
        api,
        linux_vm.uuid,
        remote_host=lab_dst.address,
        user=lab_dst.ssh_user,
        password=lab_dst.ssh_password,
        delete_source=True,
    )
    host.refresh_from_db()
    assert (host.transport, host.ssh_user) == ("ssh", lab_dst.ssh_user)
    assert migration_execute(migration_id=migration_id) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {lab_dst.name: "running"}


def test_wrong_password_changes_nothing(api, destination, lab_config):
    lab_dst, host = destination
    before = authorized_keys(lab_config, lab_dst)
    response = set_up_access(api, host, lab_dst.ssh_user, "not-the-password-9f2k")
    assert response.status_code == 400
    assert response.json() == {
        "password": [f"wrong user name or password for {lab_dst.ssh_user}@{lab_dst.address}:22"]
    }
    assert authorized_keys(lab_config, lab_dst) == before
    host.refresh_from_db()
    assert host.transport == "tcp"


@pytest.fixture
def user_without_libvirt(tmp_path):
    name = "nolibvirt"
    password = "no-libvirt-Pw-7731"
    home = tmp_path / "home"
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    SECRETS_USED.add(password)
    yield name, password, home
    subprocess.run(["userdel", name], capture_output=True)


def test_user_without_libvirt_access_is_refused(api, linux_vm, destination, user_without_libvirt):
    _lab_dst, host = destination
    name, password, home = user_without_libvirt
    response = set_up_access(api, host, name, password)
    assert response.status_code == 400
    message = response.json()["user"][0]
    assert message.startswith(f"{name} on {host.name} cannot use libvirt")
    assert message.endswith(REMOTE_USER_NEEDS)
    assert not (home / ".ssh").exists()

    # Installed by hand, the key works but libvirt refuses: the pre-check says why.
    (home / ".ssh").mkdir(mode=0o700)
    key = api.get("/api/ssh-key/").json()["public_key"]
    (home / ".ssh" / "authorized_keys").write_text(key + "\n")
    subprocess.run(["chown", "-R", f"{name}:", str(home)], check=True)
    Host.objects.filter(pk=host.pk).update(transport="ssh", ssh_user=name, port=None)
    # The Linux guest runs on another host (the lab may have more than two).
    check = api.post(
        f"/api/vms/{linux_vm.uuid}/migrate/check/", {"remote_host": host.name}, format="json"
    ).json()
    reachable = next(c for c in check["checks"] if c["name"] == "destination_reachable")
    assert reachable["status"] == "fail"
    assert REMOTE_USER_NEEDS in reachable["message"]


class PlainSshd:
    """A plain sshd of the test's own on SSHD_ADDRESS:2222, to refuse passwords or to
    change its host key (the lab hosts' sshd keep theirs)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen | None = None

    def start(self, *, key_name: str, password_logins: bool) -> None:
        self.stop()
        key = self.folder / key_name
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        config = self.folder / "sshd_config"
        config.write_text(
            f"ListenAddress {SSHD_ADDRESS}\nPort {SSHD_PORT}\nHostKey {key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\nUsePAM no\n"
            f"PasswordAuthentication {'yes' if password_logins else 'no'}\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
        labtools.wait_for(self._listening, timeout=10, what="test sshd")
        self.key = ssh.HostKey.from_line((self.folder / f"{key_name}.pub").read_text())

    def _listening(self) -> bool:
        try:
            ssh.host_key_scan(SSHD_ADDRESS, SSHD_PORT)
            return True
        except ssh.SshError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def test_sshd(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the test sshd needs root", pytrace=False)
    server = PlainSshd(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def sshd_host(api):
    response = api.post(
        "/api/hosts/",
        {"name": "sshd-only", "address": SSHD_ADDRESS, "transport": "ssh", "port": SSHD_PORT},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return Host.objects.get(pk=response.json()["id"])


def test_sshd_refusing_password_logins(api, test_sshd, sshd_host, user_without_libvirt):
    name, password, home = user_without_libvirt
    test_sshd.start(key_name="key_a", password_logins=False)
    response = set_up_access(api, sshd_host, name, password)
    assert response.status_code == 400
    assert response.json() == {
        "password": [
            f"the ssh server of {SSHD_ADDRESS} refuses password logins (it allows: publickey)"
        ]
    }
    assert not (home / ".ssh").exists()


def test_replaced_host_key_is_refused_until_accepted(
    api, test_sshd, sshd_host, user_without_libvirt
):
    name, password, home = user_without_libvirt
    test_sshd.start(key_name="key_a", password_logins=True)
    set_up_access(api, sshd_host, name, password)  # first contact pins key A
    sshd_host.refresh_from_db()
    first = test_sshd.key
    assert sshd_host.ssh_host_key_fingerprint == first.fingerprint

    test_sshd.start(key_name="key_b", password_logins=True)
    second = test_sshd.key
    response = set_up_access(api, sshd_host, name, password)
    assert response.status_code == 400
    message = response.json()["non_field_errors"][0]
    assert f"it was {first.fingerprint}, it is now {second.fingerprint}" in message
    assert not (home / ".ssh").exists()
    refreshed = api.post(f"/api/hosts/{sshd_host.pk}/refresh/").json()
    assert refreshed["status"] == "unreachable"
    assert f"it was {first.fingerprint}, it is now {second.fingerprint}" in refreshed["last_error"]
    assert refreshed["ssh_host_key_pending_fingerprint"] == second.fingerprint

    accept_url = f"/api/hosts/{sshd_host.pk}/accept-host-key/"
    # Only the fingerprint the administrator checked is accepted.
    refused = api.post(accept_url, {"fingerprint": first.fingerprint}, format="json")
    assert refused.status_code == 400
    assert second.fingerprint in refused.json()["fingerprint"][0]
    accepted = api.post(accept_url, {"fingerprint": second.fingerprint}, format="json").json()
    assert accepted["ssh_host_key_fingerprint"] == second.fingerprint
    assert accepted["ssh_host_key_pending_fingerprint"] == ""
    event = AuditEvent.objects.get(event_type="host.host_key_accepted")  # one: not the refused
    assert event.before == {"ssh_host_key_fingerprint": first.fingerprint}
    assert event.after == {"ssh_host_key_fingerprint": second.fingerprint}
    # With the new key accepted, the connection gets as far as the user's rights.
    response = set_up_access(api, sshd_host, name, password)
    assert "cannot use libvirt" in response.json()["user"][0]


def _database_text() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            chunks.append(repr(cursor.fetchall()))
    return "\n".join(chunks)


def _redis_text() -> str:
    client = redis.from_url(settings.REDIS_URL)
    chunks = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            chunks.append(repr(client.get(key)))
        elif kind == "list":
            chunks.append(repr(client.lrange(key, 0, -1)))
        elif kind == "hash":
            chunks.append(repr(client.hgetall(key)))
        elif kind in ("set", "zset"):
            chunks.append(
                repr(client.zrange(key, 0, -1) if kind == "zset" else client.smembers(key))
            )
    return "\n".join(chunks)


def _assert_no_secret_anywhere(log_text: str) -> None:
    places = {
        "database (all tables, audit included)": _database_text(),
        "redis (task queue, channel layer)": _redis_text(),
        "log records": log_text,
        "log files": "\n".join(
            p.read_text(errors="replace") for p in settings.DATA_DIR.rglob("*.log") if p.is_file()
        ),
    }
    for secret in SECRETS_USED:
        for place, text in places.items():
            assert secret not in text, f"a password was found in the {place}"


@pytest.fixture(autouse=True)
def no_secret_left_behind(caplog):
    """After each test (before its data is flushed): no password in the database, the
    queue, the logs or the audit."""
    caplog.set_level("DEBUG")
    yield
    _assert_no_secret_anywhere(caplog.text)


def test_secrets_were_checked(api, destination):
    lab_dst, host = destination
    assert set_up_access(api, host, lab_dst.ssh_user, lab_dst.ssh_password).status_code == 200
    assert lab_dst.ssh_password in SECRETS_USED
    # The grep itself finds a password where one is: it is not vacuous.
    with pytest.raises(AssertionError, match="log records"):
        _assert_no_secret_anywhere(f"oops {lab_dst.ssh_password}")
