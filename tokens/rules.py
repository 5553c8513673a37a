"""What a token may do, decided from its row and the request alone (pure)."""

from __future__ import annotations

import ipaddress
from datetime import datetime

PREFIX = "mig_"


def parse(raw: str) -> tuple[str, str] | None:
    """("key_id", "secret") of "mig_<key_id>.<secret>", or None (a legacy key)."""
    if not raw.startswith(PREFIX) or "." not in raw:
        return None
    key_id, _, secret = raw[len(PREFIX) :].partition(".")
    return (key_id, secret) if key_id and secret else None


def refusal(
    *,
    revoked_at: datetime | None,
    expires_at: datetime | None,
    allowed_networks: list[str],
    client_ip: str | None,
    now: datetime,
) -> str | None:
    """Why this token may not be used now (a 401's message), or None."""
    if revoked_at is not None:
        return f"This token was revoked on {revoked_at:%Y-%m-%d %H:%M} UTC."
    if expires_at is not None and expires_at <= now:
        return f"This token expired on {expires_at:%Y-%m-%d %H:%M} UTC."
    if allowed_networks and not in_networks(client_ip, allowed_networks):
        return f"This token may not be used from {client_ip or 'an unknown address'}."
    return None


def in_networks(client_ip: str | None, networks: list[str]) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in networks)


def write_refused(*, write_enabled: bool, method: str) -> bool:
    return not write_enabled and method.upper() not in ("GET", "HEAD", "OPTIONS")
