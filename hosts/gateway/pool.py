"""Pooled connections: kept open between calls, closed when idle, broken or before a fork."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from hosts.connection_pool import ConnectionPool
from hosts.gateway import session
from hosts.gateway.connection import HostConnection
from hosts.gateway.session import _close, _open, is_alive
from hosts.hypervisor import HostRefused as HostRefused  # callers catch gateway.HostRefused
from hosts.hypervisor import (
    HostUnreachable,
)

POOL_IDLE_S = float(os.environ.get("PORTAL_LIBVIRT_POOL_IDLE_S", "300"))
POOL_MAX_IDLE = 2


_pool = ConnectionPool(
    open_=_open,
    close=_close,
    alive=is_alive,
    settings=lambda: (session.KEEPALIVE_INTERVAL_S, session.KEEPALIVE_COUNT),
    max_idle=POOL_MAX_IDLE,
    idle_s=POOL_IDLE_S,
)


@contextmanager
def pooled(uri: str, *, timeout: float, generation: str = "") -> Iterator[HostConnection]:
    """A pooled HostConnection lent to this block alone; kept open after it unless the
    block raises HostUnreachable or calls `mark_broken()`."""
    entry = _pool.acquire(uri, timeout, generation)
    handle = HostConnection(uri, entry.conn)
    broken = False
    try:
        yield handle
    except HostUnreachable:
        broken = True
        raise
    finally:
        _pool.release(entry, broken=broken or handle.broken)


def pool_forget(uri: str | None = None) -> None:
    """Close idle pooled connections to `uri` (all if None); those in use close on return."""
    _pool.forget(uri)


def pool_size() -> int:
    return _pool.size()


# A child must not inherit sockets libvirt's event loop watches (it would read the
# parent's replies): idle connections are closed before a fork.
os.register_at_fork(before=_pool.forget, after_in_child=_pool.after_fork_in_child)
