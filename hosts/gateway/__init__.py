"""The only package that imports libvirt: bounded connects, readable errors, plain data out.

`session` opens and names, `connection` reads and migrates, `events` listens, `pool` lends."""

from hosts.gateway.connection import HostConnection, connect, migration_arguments
from hosts.gateway.events import EventStream, open_event_stream
from hosts.gateway.pool import POOL_MAX_IDLE, pool_forget, pool_size, pooled
from hosts.gateway.session import is_alive, keepalive_bound_s, state_reason
from hosts.hypervisor import (
    DirtyRate,
    DiskInfo,
    DomainEvent,
    DomainInfo,
    DomainNotFound,
    DomainState,
    GatewayError,
    HostCapabilities,
    HostRefused,
    HostUnreachable,
    MigrationSpec,
    PoolInfo,
    VolumeInfo,
)

__all__ = [
    "POOL_MAX_IDLE",
    "DirtyRate",
    "DiskInfo",
    "DomainEvent",
    "DomainInfo",
    "DomainNotFound",
    "DomainState",
    "EventStream",
    "GatewayError",
    "HostCapabilities",
    "HostConnection",
    "HostRefused",
    "HostUnreachable",
    "MigrationSpec",
    "PoolInfo",
    "VolumeInfo",
    "is_alive",
    "connect",
    "is_alive",
    "keepalive_bound_s",
    "migration_arguments",
    "open_event_stream",
    "pool_forget",
    "pool_size",
    "pooled",
    "state_reason",
]
