"""Domain events of one host, from libvirt's event-loop thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import libvirt

from hosts.gateway.connection import HostConnection
from hosts.gateway.session import _close, _open, _reasons, _translate, is_alive, logger
from hosts.hypervisor import (
    DomainEvent,
)
from hosts.hypervisor import HostRefused as HostRefused  # callers catch gateway.HostRefused

# Lifecycle events and their details, named as libvirt names them (lower case).
_EVENT_NAMES = (
    "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
    "pmsuspended", "crashed",
)  # fmt: skip
LIFECYCLE_EVENTS = {getattr(libvirt, f"VIR_DOMAIN_EVENT_{n.upper()}"): n for n in _EVENT_NAMES}
LIFECYCLE_DETAILS = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{name.upper()}"): _reasons(
        f"VIR_DOMAIN_EVENT_{name.upper()}_"
    )
    for name in _EVENT_NAMES
}


class EventStream:
    """A connection that reports the host's domain events (lifecycle, reboot, job
    completed) to `on_event`, from libvirt's event-loop thread, and its end (keepalive
    timeout, libvirtd gone, `close()`) to `on_closed` once. Callbacks must only hand the
    event on: they run on the loop that keeps every connection of the process alive."""

    def __init__(
        self,
        uri: str,
        conn: libvirt.virConnect,
        on_event: Callable[[DomainEvent], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self.uri = uri
        self._conn = conn
        self._on_event = on_event
        self._on_closed = on_closed
        self._closed = threading.Event()
        self._shut = False
        self._callbacks: list[int] = []
        conn.registerCloseCallback(self._closed_by_libvirt, None)
        for event_id, handler in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed),
        ):
            self._callbacks.append(conn.domainEventRegisterAny(None, event_id, handler, None))
        self.connection = HostConnection(uri, conn)

    def _emit(self, event: DomainEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a failing handler must not break libvirt's loop
            logger.exception("handling %s on %s", event, self.uri)

    def _lifecycle(self, _conn, dom, event: int, detail: int, _opaque) -> None:
        name = LIFECYCLE_EVENTS.get(event, str(event))
        details = LIFECYCLE_DETAILS.get(event, {})
        self._emit(
            DomainEvent(
                dom.UUIDString(), dom.name(), "lifecycle", name, details.get(detail, str(detail))
            )
        )

    def _reboot(self, _conn, dom, _opaque) -> None:
        self._emit(DomainEvent(dom.UUIDString(), dom.name(), "reboot"))

    def _job_completed(self, _conn, dom, _params, _opaque) -> None:
        self._emit(DomainEvent(dom.UUIDString(), dom.name(), "job_completed"))

    def _closed_by_libvirt(self, _conn, reason: int, _opaque) -> None:
        names = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "the host closed the connection",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed",
        }
        self._end(names.get(reason, f"closed ({reason})"))

    def _end(self, why: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._on_closed(why)
        except Exception:
            logger.exception("closing the event stream of %s", self.uri)

    @property
    def closed(self) -> bool:
        return self._closed.is_set() or not is_alive(self._conn)

    def close(self) -> None:
        if self._shut:
            return
        self._shut = True
        for callback in self._callbacks:
            try:
                self._conn.domainEventDeregisterAny(callback)
            except libvirt.libvirtError:
                pass  # the connection is already gone
        self._callbacks.clear()
        try:
            self._conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        _close(self._conn)
        self._end("closed")


def open_event_stream(
    uri: str,
    *,
    timeout: float,
    on_event: Callable[[DomainEvent], None],
    on_closed: Callable[[str], None],
) -> EventStream:
    """A new connection to `uri` that reports its domain events (see EventStream)."""
    conn = _open(uri, timeout)
    try:
        return EventStream(uri, conn, on_event, on_closed)
    except libvirt.libvirtError as exc:
        _close(conn)
        raise _translate(exc, f"listening to the events of {uri}") from exc
