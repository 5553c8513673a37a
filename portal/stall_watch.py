"""Stall watch for the web workers (PORTAL_STALL_WATCH_MS; off by default).

Each worker's event loop beats every BEAT_S. A thread of the worker notices a beat that
is late by more than the threshold and, once the loop beats again, logs one line: how
long the loop stood still, how much CPU each thread of the worker used in that time
(busy, or waiting and descheduled), the garbage collector's passes in it, and where each
thread was when the stall was noticed. That tells a stall in the worker's own code from
a process the kernel did not run (docs/performance.md, issue #24).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field

logger = logging.getLogger("portal.stall")

BEAT_S = 0.005
_started = False


@dataclass
class Stall:
    began: float  # the last beat (monotonic s)
    cpu_at_start: dict[int, float]
    stacks: dict[str, str] = field(default_factory=dict)


def _thread_cpu_s() -> dict[int, float]:
    cpu: dict[int, float] = {}
    for thread in threading.enumerate():
        try:
            cpu[thread.ident] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, TypeError, ValueError):
            continue  # ended meanwhile
    return cpu


def _stacks(skip: int) -> dict[str, str]:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = {}
    for ident, frame in sys._current_frames().items():
        if ident == skip:
            continue
        lines = traceback.format_stack(frame, limit=6)
        stacks[names.get(ident, str(ident))] = " <- ".join(
            line.strip().splitlines()[0] for line in reversed(lines)
        )
    return stacks


class StallWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float) -> None:
        self.loop = loop
        self.threshold_s = threshold_s
        self.last_beat = time.monotonic()
        self.gc_passes: deque[tuple[float, float, int]] = deque(maxlen=256)
        self._gc_started = 0.0

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self.loop.call_soon(self._beat)
        threading.Thread(target=self._watch, name="stall-watch", daemon=True).start()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()
        self.loop.call_later(BEAT_S, self._beat)

    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.monotonic()
        if phase == "start":
            self._gc_started = now
        else:
            self.gc_passes.append((self._gc_started, now - self._gc_started, info["generation"]))

    def _watch(self) -> None:
        me = threading.get_ident()
        stall: Stall | None = None
        # The threads' CPU clocks at each look, to count from the last one before a stall.
        looks: deque[tuple[float, dict[int, float]]] = deque(maxlen=8)
        while not self.loop.is_closed():
            time.sleep(self.threshold_s / 4)
            now = time.monotonic()
            looks.append((now, _thread_cpu_s()))
            late = now - self.last_beat - BEAT_S
            if stall is None and late > self.threshold_s:
                before = [cpu for at, cpu in looks if at <= self.last_beat]
                stall = Stall(
                    began=self.last_beat,
                    cpu_at_start=before[-1] if before else looks[0][1],
                    stacks=_stacks(skip=me),
                )
            elif stall is not None and self.last_beat > stall.began:
                self._report(stall, self.last_beat)
                stall = None

    def _report(self, stall: Stall, ended: float) -> None:
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        cpu_now = _thread_cpu_s()
        used = {
            names.get(ident, str(ident)): round(1000 * (cpu_now[ident] - before), 1)
            for ident, before in stall.cpu_at_start.items()
            if ident in cpu_now
        }
        passes = [
            f"gen{generation} {1000 * took:.1f} ms"
            for began, took, generation in list(self.gc_passes)
            if began >= stall.began - self.threshold_s and took >= 0.001
        ]
        logger.warning(
            "event loop stalled %.0f ms (pid %d); CPU per thread meanwhile (ms): %s; "
            "gc passes: %s; stacks when noticed: %s",
            1000 * (ended - stall.began),
            os.getpid(),
            used,
            passes or "none over 1 ms",
            stall.stacks,
        )


def stall_watch_start_once(threshold_ms: float) -> None:
    """From inside the worker's running loop (the first request); a no-op when off."""
    global _started
    if _started or threshold_ms <= 0:
        return
    _started = True
    StallWatch(asyncio.get_running_loop(), threshold_ms / 1000).start()
