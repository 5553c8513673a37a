"""GC in the web workers (docs/performance.md): a full collection stopped the threads
100-150 ms, the API's latency tail. Long-lived objects are frozen (after load and after
warm-up), and full passes run every FULL_PASS_EVERY middle passes instead of 10.
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
