"""Issue #22 item 6: ssh errors from paramiko (a hang-up, a timeout, an SSHException)
become the host's or the migration's error, never a dead task or a 500; a portal key of
a kind the portal cannot log in with is refused at import. The ssh server here is a real
paramiko server on a lab address that logs anyone in and then misbehaves."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.management import call_command
from django.core.management.base import CommandError

from hosts.access import ssh
from hosts.access.models import PortalCredential
from hosts.access.peer_services import PeerTrustError
from hosts.access.ssh_services import session_run
from hosts.models import Host

pytestmark = pytest.mark.django_db

ADDRESS = "127.0.0.201"
SERVER_KEY = paramiko.RSAKey.generate(2048)


class _Server(paramiko.ServerInterface):
    """Any password logs in; an exec is accepted, then `behaviour` happens."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if self.behaviour == "refuse-channel":
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command) -> bool:
        return True  # "silent": nothing is ever sent back; "hang-up": closed below


@pytest.fixture
def ssh_server(request) -> Iterator[int]:
    behaviour = request.param
    listener = socket.socket()
    listener.bind((ADDRESS, 0))
    listener.listen(8)
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(client)
            transport.add_server_key(SERVER_KEY)
            transport.start_server(server=_Server(behaviour))
            transports.append(transport)
            if behaviour == "hang-up":
                channel = transport.accept(10)
                if channel is not None:
                    transport.close()  # the peer goes away mid-command: EOF on our side

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for transport in transports:
        transport.close()


def _session(port: int) -> ssh.Session:
    session, _offered = ssh.session_open(
        address=ADDRESS, port=port, user="root", pinned=None, password="pw"
    )
    return session


@pytest.mark.parametrize("ssh_server", ["silent", "hang-up", "refuse-channel"], indirect=True)
def test_a_broken_session_is_an_ssh_error_naming_the_host(ssh_server):
    with _session(ssh_server) as session:
        with pytest.raises(ssh.SshUnreachable, match=f"ssh to root@{ADDRESS}:{ssh_server}"):
            session.run("virsh uri", timeout=0.5)
        with pytest.raises(PeerTrustError, match="ssh to root@"):
            session_run(session, "virsh uri", timeout=0.5, error=PeerTrustError)


@pytest.mark.parametrize("ssh_server", ["silent", "hang-up"], indirect=True)
def test_ssh_access_set_up_on_a_broken_server_is_a_400_not_a_500(api, vm, ssh_server, monkeypatch):
    monkeypatch.setattr(ssh, "CONNECT_TIMEOUT_S", 2.0)
    host = Host.objects.get(name="src")
    Host.objects.filter(pk=host.pk).update(address=ADDRESS, port=ssh_server, transport="ssh")
    # The probe's own 30 s timeout would make this slow: the server answers nothing.
    monkeypatch.setattr(ssh.Session, "run", _with_timeout(ssh.Session.run, 1.0), raising=True)
    response = api.post(
        f"/api/hosts/{host.pk}/ssh-access/", {"user": "root", "password": "pw"}, format="json"
    )
    assert response.status_code == 400, response.content
    assert f"ssh to root@{ADDRESS}" in str(response.json())


def _with_timeout(run, seconds: float):
    def bounded(self, command: str, timeout: float = 30.0):
        return run(self, command, timeout=min(timeout, seconds))

    return bounded


def _write_key(path: Path, key) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    ],
    ids=["rsa", "ecdsa"],
)
def test_a_key_the_portal_cannot_log_in_with_is_refused_at_import(tmp_path, key):
    path = _write_key(tmp_path / "id_other", key)
    with pytest.raises(ssh.SshError, match="not an ed25519 key"):
        ssh.portal_key_read(path)
    stored = PortalCredential.objects.count()
    with pytest.raises(CommandError, match="not an ed25519 key"):
        call_command("portal_credentials", "import-ssh-key", str(path))
    assert PortalCredential.objects.count() == stored  # nothing replaced
