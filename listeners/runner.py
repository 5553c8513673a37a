"""The listener process: takes the lease of every host nobody listens to, keeps one
event connection per host (reconnecting with back-off), applies events in order.

Threads: the main loop (leases, every LISTENER_HEARTBEAT_S), one watcher per host
(connect, wait for the end, back off), one applier (the events, in arrival order), and
libvirt's event loop (gateway), whose callbacks only queue."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from hosts import gateway
from hosts.connections import host_event_stream
from hosts.hypervisor import DomainEvent
from hosts.models import Host, HostStatus
from listeners import rules
from listeners.lease import (
    listener_claim,
    listener_release,
    listener_renew,
    listener_state_record,
)
from listeners.models import ListenerState
from listeners.services import host_event_apply, listener_actor
from vms.services import host_refresh

logger = logging.getLogger(__name__)


@dataclass
class Watcher:
    """One host's listener under one lease epoch."""

    host_id: int
    epoch: int
    events: queue.Queue
    stop: threading.Event = field(default_factory=threading.Event)
    stream: gateway.EventStream | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"listener-host-{self.host_id}", daemon=True
        )
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        stream = self.stream
        if stream is not None:
            stream.close()

    def _run(self) -> None:
        attempt = 0
        try:
            while not self.stop.is_set():
                error = self._listen_once()
                if self.stop.is_set():
                    break
                if error is None:
                    attempt = 0  # it listened, then the connection ended: retry at once
                if not self._record(ListenerState.RETRYING, error or "connection ended"):
                    break
                self.stop.wait(rules.retry_after_s(attempt))
                attempt += 1
        finally:
            connection.close()

    def _listen_once(self) -> str | None:
        """Listen until the connection ends: None, or why it could not start."""
        ended = threading.Event()
        try:
            host = Host.objects.get(pk=self.host_id)
            self.stream = host_event_stream(
                host,
                on_event=lambda event: self.events.put((self, event)),
                on_closed=lambda _why: ended.set(),
            )
        except Host.DoesNotExist:
            self.stop.set()
            return "the host is gone"
        except (gateway.GatewayError, DatabaseError, OSError) as exc:
            connection.close()
            return str(exc)
        try:
            # What changed while nobody listened: read the whole host once. Not read,
            # not listening: the events from here on would miss what changed before.
            refreshed = host_refresh(host=host, actor=listener_actor(host))
            if refreshed.status != HostStatus.REACHABLE:
                return f"could not read the host: {refreshed.last_error}"
            if not self._record(ListenerState.LISTENING):
                return None
            logger.info("listening to the events of %s", host.name)
            while not self.stop.is_set() and not ended.wait(1.0):
                if self.stream.closed:
                    break
            return None
        except DatabaseError as exc:
            connection.close()
            return f"database: {exc}"
        finally:
            self.stream.close()

    def _record(self, state: str, error: str = "") -> bool:
        try:
            kept = listener_state_record(
                host_id=self.host_id, epoch=self.epoch, state=state, error=error[:2000]
            )
        except DatabaseError:
            connection.close()
            return True  # a blip: the lease loop decides whether the lease is still ours
        if not kept:
            self.stop.set()
        return kept


class ListenerProcess:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.events: queue.Queue = queue.Queue()
        self.watchers: dict[int, Watcher] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        applier = threading.Thread(target=self._apply_loop, name="listener-apply", daemon=True)
        applier.start()
        try:
            while not self.stopping.is_set():
                try:
                    close_old_connections()
                    self.tick()
                except DatabaseError as exc:
                    logger.warning("listener leases: %s", exc)
                    connection.close()
                self.stopping.wait(settings.LISTENER_HEARTBEAT_S)
        finally:
            self.shutdown()

    def tick(self) -> None:
        """Renew what this process holds, drop what it lost, take what nobody holds."""
        # A retired host is not listened to: its watcher stops, none is started.
        host_ids = set(Host.objects.filter(retired=False).values_list("pk", flat=True))
        for host_id, watcher in list(self.watchers.items()):
            lost = host_id not in host_ids or watcher.stop.is_set()
            if not lost and not listener_renew(host_id=host_id, epoch=watcher.epoch):
                logger.warning("listener of host %s: lease taken over", host_id)
                lost = True
            if lost:
                watcher.halt()
                del self.watchers[host_id]
        for host_id in sorted(host_ids - set(self.watchers)):
            epoch = listener_claim(host_id=host_id, owner=self.owner)
            if epoch is not None:
                watcher = Watcher(host_id=host_id, epoch=epoch, events=self.events)
                self.watchers[host_id] = watcher
                watcher.start()

    def shutdown(self) -> None:
        self.stopping.set()
        for host_id, watcher in list(self.watchers.items()):
            watcher.halt()
            try:
                listener_release(host_id=host_id, epoch=watcher.epoch)
            except DatabaseError:
                pass  # it goes stale and is taken over
        self.watchers.clear()
        self.events.put(None)

    def _apply_loop(self) -> None:
        while True:
            item = self.events.get()
            if item is None:
                return
            watcher, event = item
            if watcher.stop.is_set():
                continue
            try:
                self._apply(watcher, event)
            except DatabaseError as exc:
                logger.warning("applying %s: %s", event, exc)
                connection.close()
            except Exception:
                logger.exception("applying %s", event)

    def _apply(self, watcher: Watcher, event: DomainEvent) -> None:
        info = None
        if rules.changes_state(event):
            stream = watcher.stream
            if stream is None:
                return
            try:
                info = stream.connection.find_domain(uuid=event.uuid)
            except gateway.GatewayError as exc:
                # The connection is ending; the reconnect reads the whole host again.
                logger.info("reading %s after %s: %s", event.name, event, exc)
                return
        applied = host_event_apply(
            host_id=watcher.host_id,
            epoch=watcher.epoch,
            event=event,
            info=info,
            read_at=timezone.now(),
        )
        if not applied:
            watcher.halt()
