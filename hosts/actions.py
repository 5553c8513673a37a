"""The fix named the way the pages name it. Messages that tell a person what to do next
are read in the browser as often as by scripts, so they point at the button, never at
an API call; docs/api.md maps each button to its endpoint."""

from __future__ import annotations

from hosts.models import Host


def on_host_page(host: Host, button: str) -> str:
    return f'"{button}" on the host page of {host.name}'


def ssh_access_set_up(host: Host) -> str:
    return on_host_page(host, "Set up ssh access") + " (a user and password, used once)"


def tls_issue(host: Host) -> str:
    return on_host_page(host, "Issue TLS certificates")


def host_key_accept(host: Host) -> str:
    return on_host_page(host, "Accept host key") + " (after comparing its fingerprint)"


def host_retire(host: Host) -> str:
    return on_host_page(host, "Retire")


HOST_ADD = '"Add host" on the dashboard'
