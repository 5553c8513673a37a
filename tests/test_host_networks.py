"""PORTAL_HOST_NETWORKS: an address outside it is refused where it is entered (400
naming the field) and again right before any libvirt or ssh connection, so nothing
outside it is ever contacted. No host is needed: a refused address gets no packet."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from hosts import gateway
from hosts.access import ssh
from hosts.models import Host
from hosts.networks import AddressRefused, allow_list_parse, connection_check
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db

LAB = "127.0.0.0/8,::1/128"


@pytest.fixture(autouse=True)
def _lab_only(settings):
    settings.HOST_NETWORKS = LAB


def test_parse_networks_and_suffixes():
    parsed = allow_list_parse(" 127.0.0.0/8, 2001:db8::/32 ,.HV.example.org., ")
    assert parsed.networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert parsed.suffixes == (".hv.example.org",)
    assert allow_list_parse("").restricts is False
    with pytest.raises(ValueError, match="'hv1' is neither a network"):
        allow_list_parse("127.0.0.0/8,hv1")


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.12", True),
        ("::1", True),
        ("10.1.2.3", False),
        ("192.168.1.5", False),
        ("8.8.8.8", False),
        ("hv1.example.org", False),  # a name needs a listed suffix
    ],
)
def test_entered_addresses(api, address, allowed):
    response = api.post(
        "/api/hosts/", {"name": "hv", "address": address, "transport": "tcp"}, format="json"
    )
    if allowed:
        assert response.status_code == 201, response.json()
    else:
        assert response.status_code == 400
        assert list(response.json()) == ["address"]
        message = response.json()["address"][0]
        assert f"{address} is outside the networks this portal may contact" in message
        assert "PORTAL_HOST_NETWORKS: 127.0.0.0/8, ::1/128" in message
        assert not Host.objects.filter(address=address).exists()


def test_names_under_a_listed_suffix_are_accepted(api, settings):
    settings.HOST_NETWORKS = LAB + ",.hv.example.org"
    for name in ("hv1.hv.example.org", "hv.example.org"):
        response = api.post("/api/hosts/", {"name": name, "address": name}, format="json")
        assert response.status_code == 201, response.json()
    refused = api.post("/api/hosts/", {"name": "x", "address": "evilhv.example.org"}, format="json")
    assert refused.status_code == 400


def test_a_typed_in_remote_host_outside_is_refused_and_nothing_is_recorded(api, vm):
    hosts, migrations = Host.objects.count(), Migration.objects.count()
    response = api.post(
        f"/api/vms/{vm.uuid}/migrate/", {"remote_host": "192.168.7.7"}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()) == ["remote_host"]
    assert "outside the networks this portal may contact" in response.json()["remote_host"][0]
    assert (Host.objects.count(), Migration.objects.count()) == (hosts, migrations)


def test_libvirt_is_not_opened_outside(settings):
    started = time.monotonic()
    with pytest.raises(gateway.HostRefused, match="10.9.9.9 is outside"):
        with gateway.connect("qemu+tcp://10.9.9.9/system", timeout=30):
            pass
    # Refused before the TCP probe: a connect to an unrouted address would take the
    # whole timeout.
    assert time.monotonic() - started < 1.0


def test_ssh_is_not_opened_outside():
    started = time.monotonic()
    with pytest.raises(ssh.SshRefused, match="172.16.0.9 is outside"):
        ssh.host_key_scan("172.16.0.9", 22)
    assert time.monotonic() - started < 1.0


def test_a_name_is_resolved_before_connecting_and_every_address_must_be_inside(settings):
    # "localhost" resolves from /etc/hosts (no DNS query) to 127.0.0.1 and, here, ::1.
    settings.HOST_NETWORKS = "127.0.0.0/8,.localhost"
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", 22)}
    if resolved <= {"127.0.0.1"}:
        connection_check("localhost", 22)  # every address inside: allowed
    else:
        with pytest.raises(AddressRefused, match="localhost resolves to ::1"):
            connection_check("localhost", 22)
    settings.HOST_NETWORKS = "127.0.0.0/8,::1/128,.localhost"
    connection_check("localhost", 22)


def test_a_registered_host_outside_is_refused_over_the_api(api):
    # Registered before the allow-list was narrowed (the ORM skips validation).
    host = Host.objects.create(name="old", address="10.20.30.40", transport="tcp")
    response = api.post(f"/api/hosts/{host.pk}/refresh/")
    host.refresh_from_db()
    assert host.status == "unreachable"
    assert "10.20.30.40 is outside the networks this portal may contact" in host.last_error
    assert response.status_code == 200  # the refresh ran; its outcome is the host status
