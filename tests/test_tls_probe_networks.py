"""Issue #22 item 6: the TLS certificate probe checks the host network allow-list like
every other connection, and resolves a name once: the address checked is the address
connected to (a DNS answer that changes in between, rebinding, cannot move it)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from hosts.access import ssh, tls
from hosts.access.tls_services import host_tls_served_problem
from hosts.models import Host, Transport

LAB = "127.0.0.201"
OUTSIDE = "192.0.2.10"
NAME = "hv1.lab.test"


@pytest.fixture
def listener() -> Iterator[tuple[int, list]]:
    """A port on a lab address that records who connected, then hangs up."""
    server = socket.socket()
    server.bind((LAB, 0))
    server.listen(8)
    seen: list = []

    def serve() -> None:
        while True:
            try:
                client, peer = server.accept()
            except OSError:
                return
            seen.append(peer)
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], seen
    server.close()


@pytest.fixture
def rebinding_dns(monkeypatch, settings) -> list[str]:
    """NAME answers the lab address once, then an address outside the allow-list."""
    settings.HOST_NETWORKS = "127.0.0.0/8, .lab.test"
    asked: list[str] = []
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = LAB if len(asked) == 1 else OUTSIDE
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return asked


def test_the_probe_refuses_an_address_outside_the_allow_list(settings, listener):
    settings.HOST_NETWORKS = "127.0.0.0/8"
    with pytest.raises(tls.TlsRefused, match="outside the networks"):
        tls.served_certificate(OUTSIDE, 16514, timeout=1)


def test_a_name_is_resolved_once_and_that_address_is_used(rebinding_dns, listener):
    port, seen = listener
    with pytest.raises(tls.TlsError, match="no TLS answer"):  # it hangs up: no handshake
        tls.served_certificate(NAME, port, timeout=2)
    assert rebinding_dns == [NAME]  # one answer, checked and used
    assert len(seen) == 1  # the lab listener (the only one) was reached
    # The next answer is outside: refused, whatever answered before (ssh alike).
    with pytest.raises(tls.TlsRefused, match=f"resolves to {OUTSIDE}"):
        tls.served_certificate(NAME, port, timeout=2)
    with pytest.raises(ssh.SshRefused, match=f"resolves to {OUTSIDE}"):
        ssh.host_key_scan(NAME, port)
    assert rebinding_dns == [NAME] * 3 and len(seen) == 1


@pytest.mark.django_db
def test_the_tls_pre_check_names_the_refusal(settings):
    settings.HOST_NETWORKS = "127.0.0.0/8"
    host = Host(pk=7, name="far", address=OUTSIDE, transport=Transport.TLS)
    problem = host_tls_served_problem(host)
    assert problem.startswith("far's served certificate was not checked")
    assert "outside the networks" in problem
