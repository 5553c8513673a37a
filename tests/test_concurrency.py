"""core.concurrency: calls in threads, waited for within a bound."""

import threading
import time

import pytest

from core import concurrency


def test_values_and_errors_come_back_in_call_order():
    def boom():
        raise ValueError("no")

    first, second = concurrency.within([lambda: 1, boom], bound=2.0, name="t")
    assert first.result() == 1
    assert isinstance(second.error, ValueError)
    with pytest.raises(ValueError):
        second.result()


def test_a_call_past_the_bound_is_none_and_the_others_still_count():
    release = threading.Event()
    started = time.monotonic()
    slow, quick = concurrency.within([release.wait, lambda: "ok"], bound=0.2, name="t")
    assert time.monotonic() - started < 1.0
    assert slow is None
    assert quick.result() == "ok"
    release.set()


def test_a_pending_call_cannot_be_read_before_it_ends():
    release = threading.Event()
    pending = concurrency.start(release.wait, name="t")
    assert pending.running()
    with pytest.raises(RuntimeError):
        pending.result()
    release.set()
    assert pending.wait(2.0)
    assert pending.result() is True
