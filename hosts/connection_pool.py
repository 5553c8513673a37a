"""hosts.gateway's per-process pool of long-lived connections (no libvirt here).

One user at a time per connection: with libvirt 9.0 a call beside one blocked in
migrateToURI3 never returned once keepalive closed the connection. A new `generation`
retires older connections, but one in use only when given back (a migration would end).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Pooled:
    uri: str
    generation: str
    epoch: int
    settings: Hashable
    conn: Any
    last_used: float = 0.0


class ConnectionPool:
    def __init__(
        self,
        *,
        open_: Callable[[str, float], Any],
        close: Callable[[Any], None],
        alive: Callable[[Any], bool],
        settings: Callable[[], Hashable],
        max_idle: int,
        idle_s: float,
    ) -> None:
        self._open, self._close, self._alive, self._settings = open_, close, alive, settings
        self.max_idle, self.idle_s = max_idle, idle_s
        self._lock = threading.Lock()
        self._idle: dict[str, list[Pooled]] = {}  # ready to lend, most recent last
        self._busy: set[Pooled] = set()  # lent out now
        self._epochs: dict[str, int] = {}  # raised by forget: older ones are not kept
        self._generations: dict[str, str] = {}  # the newest credentials asked for, per URI
        # A forked child's inherited connections: never used or closed (nor collected),
        # which would send libvirt's close over the parent's socket.
        self._inherited: list[Pooled] = []

    def _current(self, entry: Pooled) -> bool:
        """Opened with the credentials and settings asked for now, and not forgotten."""
        return (
            entry.generation == self._generations.get(entry.uri, entry.generation)
            and entry.epoch == self._epochs.get(entry.uri, 0)
            and entry.settings == self._settings()
        )

    def acquire(self, uri: str, timeout: float, generation: str) -> Pooled:
        to_close: list[Any] = []
        found: Pooled | None = None
        now = time.monotonic()
        with self._lock:
            self._generations[uri] = generation
            for key, entries in list(self._idle.items()):
                stale = [e for e in entries if now - e.last_used > self.idle_s]
                if stale:
                    to_close += [e.conn for e in stale]
                    self._idle[key] = [e for e in entries if e not in stale]
            entries = self._idle.get(uri, [])
            while entries and found is None:
                entry = entries.pop()
                if self._current(entry) and self._alive(entry.conn):
                    found = entry
                else:
                    to_close.append(entry.conn)
            epoch = self._epochs.get(uri, 0)
            if found is not None:
                self._busy.add(found)
        for conn in to_close:
            self._close(conn)
        if found is not None:
            return found
        # Opened outside the lock: a slow host must not hold up connections to the others.
        fresh = Pooled(uri, generation, epoch, self._settings(), self._open(uri, timeout))
        with self._lock:
            self._busy.add(fresh)
        return fresh

    def release(self, entry: Pooled, *, broken: bool) -> None:
        with self._lock:
            self._busy.discard(entry)
            entries = self._idle.setdefault(entry.uri, [])
            keep = (
                not broken
                and self._current(entry)
                and len(entries) < self.max_idle
                and entry not in self._inherited
                and self._alive(entry.conn)
            )
            if keep:
                entry.last_used = time.monotonic()
                entries.append(entry)
        if not keep:
            self._close(entry.conn)

    def forget(self, uri: str | None = None) -> None:
        """Close idle connections to `uri` (all if None); those in use close on return."""
        with self._lock:
            uris = [uri] if uri is not None else list({*self._idle, *(e.uri for e in self._busy)})
            to_close = []
            for key in uris:
                self._epochs[key] = self._epochs.get(key, 0) + 1
                to_close += [e.conn for e in self._idle.pop(key, [])]
        for conn in to_close:
            self._close(conn)

    def size(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._idle.values())

    def after_fork_in_child(self) -> None:
        self._inherited.extend(
            [e for entries in self._idle.values() for e in entries] + list(self._busy)
        )
        self._idle, self._busy = {}, set()
        self._lock = threading.Lock()
