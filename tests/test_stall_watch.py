"""The web workers' stall watch (portal/stall_watch.py) on a real event loop: a loop held
up by a callback is reported once, with how long it stood still, whether its thread was
busy or waiting, and where it was."""

from __future__ import annotations

import asyncio
import logging
import time

from portal.stall_watch import StallWatch


def _run_with_stall(hold) -> None:
    async def main() -> None:
        StallWatch(asyncio.get_running_loop(), threshold_s=0.02).start()
        await asyncio.sleep(0.1)
        asyncio.get_running_loop().call_soon(hold)
        await asyncio.sleep(0.3)

    asyncio.run(main())


def _busy_120_ms() -> None:
    until = time.thread_time() + 0.12
    while time.thread_time() < until:
        pass


def _waiting_120_ms() -> None:
    time.sleep(0.12)


def _stalls(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "portal.stall"]


def test_a_busy_loop_is_reported_with_its_cpu_and_stack(caplog):
    caplog.set_level(logging.WARNING, logger="portal.stall")
    _run_with_stall(_busy_120_ms)
    [record] = _stalls(caplog)
    message = record.getMessage()
    stalled_ms = float(message.split("stalled ")[1].split(" ms")[0])
    assert 110 <= stalled_ms <= 250, message
    main_cpu_ms = float(message.split("'MainThread': ")[1].split(",")[0].rstrip("}"))
    assert main_cpu_ms >= 90, message  # busy: the thread ran through the stall
    assert "_busy_120_ms" in message


def test_a_waiting_loop_is_told_apart_from_a_busy_one(caplog):
    caplog.set_level(logging.WARNING, logger="portal.stall")
    _run_with_stall(_waiting_120_ms)
    [record] = _stalls(caplog)
    message = record.getMessage()
    main_cpu_ms = float(message.split("'MainThread': ")[1].split(",")[0].rstrip("}"))
    assert main_cpu_ms < 40, message  # stood still without running: waiting
    assert "_waiting_120_ms" in message


def test_a_loop_that_keeps_beating_is_not_reported(caplog):
    caplog.set_level(logging.WARNING, logger="portal.stall")
    _run_with_stall(lambda: None)
    assert _stalls(caplog) == []
