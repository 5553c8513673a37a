"""Calls in daemon threads with a bound on the wait; a call past it ends by itself
(libvirt's keepalive and the ssh timeouts end the calls this is used for)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    """One call running in a thread: wait for it, then read its value or its error."""

    def __init__(self, call: Callable[[], T], *, name: str) -> None:
        self._call = call
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to whoever reads the result
            self._error = exc
        finally:
            self._done.set()

    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def error(self) -> BaseException | None:
        return self._error

    def result(self) -> T:
        """The call's value, or its exception raised again; only once it has ended."""
        if not self._done.is_set():
            raise RuntimeError(f"{self._thread.name} is still running")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def start(call: Callable[[], T], *, name: str) -> Pending[T]:
    return Pending(call, name=name)


def within(calls: list[Callable[[], T]], *, bound: float, name: str) -> list[Pending[T] | None]:
    """Run `calls` at once, waiting at most `bound` s in all: each Pending, or None if late."""
    pending = [start(call, name=f"{name}-{i}") for i, call in enumerate(calls)]
    deadline = time.monotonic() + bound
    return [p if p.wait(max(0.0, deadline - time.monotonic())) else None for p in pending]
