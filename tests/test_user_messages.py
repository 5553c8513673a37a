"""Issue #22 item 6: messages shown to users carry no portal file paths. The libvirt URI
the portal opens holds `keyfile=` and `command=` (or `pkipath=`) paths of its data folder;
an error shows the URI without its query, and the data folder as `<portal data>`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from django.conf import settings

from audit.models import AuditEvent
from hosts.hypervisor import GatewayError, for_users
from hosts.models import Host

pytestmark = pytest.mark.django_db

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAInew"


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "cannot open qemu+ssh://root@h1/system?keyfile=%2Fx%2Fid&command=%2Fx%2Fssh: EOF",
            "cannot open qemu+ssh://root@h1/system: EOF",
        ),
        ("qemu+tls://h1:16514/system?pkipath=%2Fx%2Ftls", "qemu+tls://h1:16514/system"),
        ("no query: qemu+tcp://h1/system.", "no query: qemu+tcp://h1/system."),
        (
            "listing domains on 'qemu+ssh://[::1]/system?a=b'",
            "listing domains on 'qemu+ssh://[::1]/system'",
        ),
    ],
)
def test_a_uri_is_shown_without_its_query(message, shown):
    assert for_users(message) == shown
    assert str(GatewayError(message)) == shown


def test_the_data_folder_is_not_named():
    message = f"Failed to read {settings.SSH_KEY_PATH}: permission denied"
    assert for_users(message) == "Failed to read <portal data>/ssh/id_ed25519: permission denied"


@pytest.fixture
def closing_server() -> Iterator[int]:
    """A port on a lab address that accepts and hangs up: libvirt's ssh fails for real."""
    server = socket.socket()
    server.bind(("127.0.0.201", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_a_failed_connection_names_no_portal_file(api, vm, closing_server):
    host = Host.objects.get(name="src")
    Host.objects.filter(pk=host.pk).update(
        address="127.0.0.201", port=closing_server, ssh_host_key=HOST_KEY
    )
    response = api.post(f"/api/hosts/{host.pk}/refresh/")
    host.refresh_from_db()
    event = AuditEvent.objects.filter(event_type="host.unreachable").get()
    shown = [response.content.decode(), host.last_error, str(event.detail)]
    assert "qemu+ssh://root@127.0.0.201" in host.last_error  # the URI is still named
    for text in shown:
        assert "keyfile" not in text and "command=" not in text, text
        assert str(settings.DATA_DIR) not in text and "%2F" not in text, text
    page = api.get(f"/api/hosts/{host.pk}/").content.decode()
    assert "keyfile" not in page
