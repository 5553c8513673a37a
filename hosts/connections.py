"""The one way the portal opens a libvirt connection to a registered host.

`gateway.connect` takes a URI; a host needs two more things first, which every caller
used to repeat: the ssh wrapper and known_hosts file for a `qemu+ssh://` host (a new
data folder, or a restored database, may lack them), the portal's CA and client
certificate folder for a `qemu+tls://` host, and the portal's connect timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from hosts import gateway
from hosts.models import Host
from hosts.ssh_services import ssh_files_ensure
from hosts.tls_services import tls_files_ensure


@contextmanager
def host_connect(host: Host, *, timeout: float | None = None) -> Iterator[gateway.HostConnection]:
    """Open a connection to `host`, yield it, always close it.

    `timeout` bounds the opening (default `settings.LIBVIRT_CONNECT_TIMEOUT_S`; the
    pre-checks pass `MIGRATION_PRECHECK_TIMEOUT_S`). Raises what `gateway.connect`
    raises: `HostUnreachable` if the host does not answer in time.
    """
    ssh_files_ensure(host)
    tls_files_ensure(host)
    if timeout is None:
        timeout = settings.LIBVIRT_CONNECT_TIMEOUT_S
    with gateway.connect(host.connection_uri, timeout=timeout) as conn:
        yield conn
