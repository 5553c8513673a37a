"""Reads of hosts (no writes here)."""

from __future__ import annotations

from django.db.models import Q

from hosts.models import Host


def host_find(*, remote_host: str) -> Host | None:
    return Host.objects.filter(Q(name=remote_host) | Q(address=remote_host)).first()


def host_peer_trusts(host: Host):
    """The peer trusts this host takes part in, as source or destination."""
    from hosts.access.models import PeerTrust

    return (
        PeerTrust.objects.filter(Q(source=host) | Q(destination=host))
        .select_related("source", "destination")
        .order_by("source__name", "destination__name")
    )


def hosts_in_service_except(host: Host):
    """Hosts that may take part with `host` (not retired), by name."""
    return Host.objects.filter(retired=False).exclude(pk=host.pk).order_by("name")
