"""Reads of hosts (no writes here)."""

from __future__ import annotations

from django.db.models import Q

from hosts.models import Host


def host_find(*, remote_host: str) -> Host | None:
    return Host.objects.filter(Q(name=remote_host) | Q(address=remote_host)).first()
