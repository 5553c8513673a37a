"""Garbage collection in the web tier's workers: objects that live as long as the
process are kept out of the collector's full passes (gc.freeze).

A full (generation 2) collection visits every tracked object of the process: a Django
process holds a few hundred thousand (modules, URL patterns, serializers, ...), so each
one stopped every thread of the worker for 100–150 ms, several times a minute under
load: the tail of the API's latency (docs/performance.md). Frozen objects are not
visited. What the first requests build lazily (URL resolver, serializer plans, DRF
settings, connections) is long-lived too, so the process freezes once more after its
first FREEZE_AFTER_REQUESTS requests, once the garbage of those requests is collected.
Full passes then still visit what requests leave behind in the oldest generation (e.g.
cycles of model instances that outlived two younger passes): 10–35 ms each, every ten
middle-generation passes. They run every FULL_PASS_EVERY such passes instead (Python's
default is 10), so a full pass meets well under 1% of the requests; the garbage waits
longer, a few MB at most.
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
