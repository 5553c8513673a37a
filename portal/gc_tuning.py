"""Garbage collection in the web tier's workers (docs/performance.md): a full collection
visits every tracked object of the process and stopped its threads for 100-150 ms, the
tail of the API's latency. Objects that live as long as the process are frozen out of
it (gc.freeze), once loaded and again after FREEZE_AFTER_REQUESTS requests (what the
first requests build lazily: URL resolver, serializer plans, connections); full passes
run every FULL_PASS_EVERY middle-generation passes instead of 10, so that one meets
well under 1% of the requests, and the garbage waits longer (a few MB at most).
"""

from __future__ import annotations

import gc
import threading

from django.core.signals import request_finished

FREEZE_AFTER_REQUESTS = 200
FULL_PASS_EVERY = 100

_lock = threading.Lock()
_served = 0


def _count(**_kwargs) -> None:
    global _served
    with _lock:
        _served += 1
        if _served != FREEZE_AFTER_REQUESTS:
            return
    request_finished.disconnect(_count, dispatch_uid="portal_gc_freeze")
    gc.collect()
    gc.freeze()


def freeze_long_lived() -> None:
    """Call once the application is loaded: freeze now, and again after warm-up."""
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)
    gc.collect()
    gc.freeze()
    request_finished.connect(_count, dispatch_uid="portal_gc_freeze")
