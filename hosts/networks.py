"""The host network allow-list (`PORTAL_HOST_NETWORKS`): CIDR networks and DNS suffixes
(`.hv.example.org`); empty allows all. Checked when an address is entered (a name by its
suffix, no DNS) and right before any connection (every address a name resolves to).
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
    if allowed.ip_allowed(ip) if ip is not None else allowed.name_allowed(address):
        return None
    return (
        f"{address} is outside the networks this portal may contact "
        f"(PORTAL_HOST_NETWORKS: {allowed.describe()})"
    )


def connection_check(address: str, port: int) -> None:
    """Right before connecting: AddressRefused unless all `address` resolves to is allowed."""
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


def connect_checked(address: str, port: int, *, timeout: float) -> socket.socket:
    """A TCP connection to `address`, resolved once: every address it resolves to is
    checked (AddressRefused) and only those are connected to, so a DNS answer that
    changes between the check and the connection (rebinding) cannot take it elsewhere.
    OSError if none answers."""
    allowed = allow_list()
    refusal = address_refusal(address)
    if refusal:
        raise AddressRefused(refusal)
    try:
        found = socket.getaddrinfo(address.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot resolve {address}: {exc.strerror or exc}") from exc
    if allowed.restricts:
        resolved = {info[4][0] for info in found}
        outside = sorted(a for a in resolved if not allowed.ip_allowed(ipaddress.ip_address(a)))
        if outside:
            raise AddressRefused(
                f"{address} resolves to {', '.join(outside)}, outside the networks this "
                f"portal may contact (PORTAL_HOST_NETWORKS: {allowed.describe()})"
            )
    error: OSError = OSError(f"{address} resolves to no address")
    for family, kind, proto, _name, sockaddr in found:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def libvirt_endpoint_probe(uri: str, timeout: float) -> None:
    """Before libvirt opens `uri` (no timeout of its own): HostRefused, or HostUnreachable."""
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
