"""The host network allow-list (`PORTAL_HOST_NETWORKS`): which addresses the portal may
contact at all. Checked when an address is entered (400) and again right before any
connection (libvirt in hosts.gateway, ssh in hosts.access.ssh), so that nothing outside it is
ever contacted, whatever path an address took.

Entries, comma-separated: networks in CIDR form (`127.0.0.0/8`, `2001:db8::/32`) and
DNS suffixes starting with a dot (`.hv.example.org`). Empty: no restriction.
An IP address must lie in one of the networks. A hostname must end with a listed
suffix when it is entered (it is not resolved then: no DNS traffic for a typed-in
name); right before a connection it is resolved and every address it resolves to must
lie in one of the networks.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from hosts.hypervisor import DEFAULT_PORTS, HostRefused, HostUnreachable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(Exception):
    """The address is outside PORTAL_HOST_NETWORKS; nothing was contacted."""


@dataclass(frozen=True)
class AllowList:
    networks: tuple[IPNetwork, ...]
    suffixes: tuple[str, ...]

    @property
    def restricts(self) -> bool:
        return bool(self.networks or self.suffixes)

    def describe(self) -> str:
        return ", ".join([*(str(n) for n in self.networks), *self.suffixes])

    def ip_allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in network for network in self.networks)

    def name_allowed(self, hostname: str) -> bool:
        name = hostname.rstrip(".").lower()
        # ".example.org" allows example.org itself and every name under it.
        return any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes)


def allow_list_parse(text: str) -> AllowList:
    """Parse the setting; raises ValueError naming the entry that is neither."""
    networks: list[IPNetwork] = []
    suffixes: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("."):
            suffixes.append(entry.lower().rstrip("."))
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"PORTAL_HOST_NETWORKS: {entry!r} is neither a network (CIDR) nor a DNS "
                "suffix starting with '.'"
            ) from None
    return AllowList(tuple(networks), tuple(suffixes))


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> AllowList:
    return allow_list_parse(text)


def allow_list() -> AllowList:
    return _parsed(getattr(settings, "HOST_NETWORKS", ""))


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None


def address_refusal(address: str) -> str | None:
    """Why an entered address is refused (no DNS lookup), or None if it is allowed."""
    allowed = allow_list()
    if not allowed.restricts:
        return None
    ip = _ip(address)
    if ip is not None:
        ok = allowed.ip_allowed(ip)
    else:
        ok = allowed.name_allowed(address)
    if ok:
        return None
    return (
        f"{address} is outside the networks this portal may contact "
        f"(PORTAL_HOST_NETWORKS: {allowed.describe()})"
    )


def connection_check(address: str, port: int) -> None:
    """Right before connecting to `address`: raise AddressRefused unless every address
    it stands for lies in the allowed networks (a hostname is resolved here)."""
    allowed = allow_list()
    if not allowed.restricts:
        return
    refusal = address_refusal(address)
    if refusal:
        raise AddressRefused(refusal)
    if _ip(address) is not None:
        return
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(address, port)}
    except OSError as exc:
        raise AddressRefused(f"cannot resolve {address}: {exc}") from exc
    outside = sorted(a for a in resolved if not allowed.ip_allowed(ipaddress.ip_address(a)))
    if outside:
        raise AddressRefused(
            f"{address} resolves to {', '.join(outside)}, outside the networks this portal "
            f"may contact (PORTAL_HOST_NETWORKS: {allowed.describe()})"
        )


def libvirt_endpoint_probe(uri: str, timeout: float) -> None:
    """Before libvirt opens `uri` (its open has no timeout of its own: a silent host
    would block it for minutes): HostRefused if the host is outside the allowed
    networks, HostUnreachable if its port does not answer within `timeout` s."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2] or "unix"
    if not (parts.hostname and transport in DEFAULT_PORTS):
        return
    address, port = parts.hostname, parts.port or DEFAULT_PORTS[transport]
    try:
        connection_check(address, port)
    except AddressRefused as exc:
        raise HostRefused(str(exc)) from None
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except TimeoutError as exc:
        raise HostUnreachable(f"{address}:{port} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise HostUnreachable(f"cannot connect to {address}:{port}: {exc.strerror or exc}") from exc
