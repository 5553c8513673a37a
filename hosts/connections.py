"""The one way to open libvirt on a registered host: its ssh or TLS files made first."""

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
    """A connection to `host`, closed after; `reuse`: the process's pooled one (fresh ones
    see the host as a new client would: registration, settlement)."""
    with host_connector(host, timeout=timeout, reuse=reuse)() as conn:
        yield conn


def host_connector(
    host: Host, *, timeout: float | None = None, reuse: bool = False
) -> Callable[[], AbstractContextManager[gateway.HostConnection]]:
    """`host_connect` in two steps: the database work now; the callable only opens, so it
    can run in another thread (the concurrent pre-checks)."""
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
    """The keys and certificates a pooled connection was opened with: a change retires it."""
    parts = [host.ssh_host_key_fingerprint, str(host.ssh_access_set_up_at or "")]
    if host.transport == Transport.SSH:
        parts.append(str(_mtime(settings.SSH_KEY_PATH)))
    if host.transport == Transport.TLS:
        parts += [host.tls_ca_fingerprint, host.tls_server_fingerprint]
        parts.append(str(_mtime(Path(settings.TLS_CLIENT_DIR) / "clientcert.pem")))
    return "|".join(parts)


def host_event_stream(
    host: Host,
    *,
    on_event: Callable[[gateway.DomainEvent], None],
    on_closed: Callable[[str], None],
    timeout: float | None = None,
) -> gateway.EventStream:
    """A connection of its own to `host` that reports its domain events (the listeners)."""
    ssh_files_ensure(host)
    tls_files_ensure(host)
    return gateway.open_event_stream(
        host.connection_uri,
        timeout=settings.LIBVIRT_CONNECT_TIMEOUT_S if timeout is None else timeout,
        on_event=on_event,
        on_closed=on_closed,
    )
