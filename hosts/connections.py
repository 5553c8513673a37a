"""The one way the portal opens a libvirt connection to a registered host.

`gateway.connect` takes a URI; a host needs more first: the ssh wrapper and known_hosts
file for a `qemu+ssh://` host (a new data folder, or a restored database, may lack
them), the portal's CA and client certificate folder for a `qemu+tls://` host, and
the portal's connect timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from django.conf import settings

from hosts import gateway
from hosts.access.ssh_services import ssh_files_ensure
from hosts.access.tls_services import tls_files_ensure
from hosts.models import Host, Transport


@contextmanager
def host_connect(
    host: Host, *, timeout: float | None = None, reuse: bool = False
) -> Iterator[gateway.HostConnection]:
    """Open a connection to `host`, yield it, always close it (with `reuse`: give it
    back to the pool).

    `timeout` bounds the opening (default `settings.LIBVIRT_CONNECT_TIMEOUT_S`; the
    pre-checks pass `MIGRATION_PRECHECK_TIMEOUT_S`). Raises what `gateway.connect`
    raises: `HostUnreachable` if the host does not answer in time.

    `reuse`: take the process's long-lived connection to the host (`gateway.pooled`,
    opened if there is none alive) and leave it open: what the migration engine and
    its pre-checks use. A fresh connection (the default) is for what must see the host
    as a new client would: registration, "test connection", settlement after a fault.
    """
    with host_connector(host, timeout=timeout, reuse=reuse)() as conn:
        yield conn


def host_connector(
    host: Host, *, timeout: float | None = None, reuse: bool = False
) -> Callable[[], AbstractContextManager[gateway.HostConnection]]:
    """`host_connect` in two steps: what needs the database (the ssh and tls files, the
    host's row) is done now, in the calling thread; the returned callable only opens
    the connection, so it can run in another thread (the concurrent pre-checks)."""
    ssh_files_ensure(host)
    tls_files_ensure(host)
    if timeout is None:
        timeout = settings.LIBVIRT_CONNECT_TIMEOUT_S
    uri = host.connection_uri
    if reuse:
        generation = credentials_generation(host)
        return lambda: gateway.pooled(uri, timeout=timeout, generation=generation)
    return lambda: gateway.connect(uri, timeout=timeout)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def credentials_generation(host: Host) -> str:
    """What a long-lived connection to `host` was opened with, beyond its URI: the
    pinned host key, the host's certificates, the portal's own key and client
    certificate. When it changes (in any process), the pooled connection is retired."""
    parts = [host.ssh_host_key_fingerprint, str(host.ssh_access_set_up_at or "")]
    if host.transport == Transport.SSH:
        parts.append(str(_mtime(settings.SSH_KEY_PATH)))
    if host.transport == Transport.TLS:
        parts += [host.tls_ca_fingerprint, host.tls_server_fingerprint]
        parts.append(str(_mtime(Path(settings.TLS_CLIENT_DIR) / "clientcert.pem")))
    return "|".join(parts)
