"""Does a websocket keep its progress rate while the API is under load? (issue #24)

A publisher process sends progress updates for one migration through the channel layer
the way the engine does (core.publish.send: one sender thread, `migration.update`), at
RATE_HZ with the time sent in each; a client follows /ws/migrations/{id}/ with the
bench's token and times each update from its sending to its arrival. Measured quiet,
then while wrk loads the API. Used by bench/api_bench.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import PY

RATE_HZ = 10
SECONDS = 6.0  # each measurement's publishing

PUBLISHER = """
import os, time
from core.publish import publish_flush, send
from migrations_app.events import migration_group
migration_id = int(os.environ["WS_BENCH_MIGRATION"])
seconds, rate = float(os.environ["WS_BENCH_SECONDS"]), float(os.environ["WS_BENCH_RATE"])
group = migration_group(migration_id)
def update(sample):
    send(group, {"type": "migration.update", "event": "progress",
                 "migration": {"id": migration_id, "status": "running"}, "sample": sample},
         "bench progress")
started = time.monotonic()
n = 0
while time.monotonic() - started < seconds:
    update({"seq": n, "sent_at": time.time()})
    n += 1
    time.sleep(max(0.0, started + n / rate - time.monotonic()))
update({"done": True})
publish_flush(10)
print(n)
"""


@dataclass
class Rate:
    sent: int
    received: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def per_second(self) -> float:
        return self.received / self.seconds

    def line(self) -> str:
        return (
            f"{self.received}/{self.sent} updates, {self.per_second:.1f}/s; delay p50 "
            f"{self.p50_ms:.1f} p99 {self.p99_ms:.1f} max {self.max_ms:.1f} ms"
        )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _follow(url: str, token: str, seconds: float, delays: list[float]) -> None:
    import websockets

    headers = {"Authorization": f"Bearer {token}"}
    origin = url.split("/ws/")[0].replace("ws://", "http://")  # as portalctl: its own origin
    async with websockets.connect(url, additional_headers=headers, origin=origin) as socket:
        snapshot = json.loads(await socket.recv())
        assert snapshot["event"] == "snapshot", snapshot
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), left))
            except TimeoutError:
                break
            sample = message.get("sample") or {}
            if sample.get("done"):
                break
            if "sent_at" in sample:
                delays.append(1000 * (time.time() - sample["sent_at"]))


def measure(
    base_ws: str, env: dict, root: Path, token: str, migration_id: int, seconds: float
) -> Rate:
    """Follow the socket while a publisher sends for `seconds`."""
    delays: list[float] = []
    url = f"{base_ws}/ws/migrations/{migration_id}/"
    follower = threading.Thread(
        target=lambda: asyncio.run(_follow(url, token, seconds + 30, delays)), daemon=True
    )
    follower.start()
    time.sleep(1.0)  # connected and joined before the first update
    published = subprocess.run(
        [PY, "manage.py", "shell", "-c", PUBLISHER],
        cwd=root,
        env={
            **env,
            "WS_BENCH_MIGRATION": str(migration_id),
            "WS_BENCH_SECONDS": str(seconds),
            "WS_BENCH_RATE": str(RATE_HZ),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    follower.join(timeout=seconds + 10)
    sent = int(published.stdout.strip().splitlines()[-1])
    return Rate(
        sent=sent,
        received=len(delays),
        seconds=seconds,
        p50_ms=_percentile(delays, 0.5),
        p99_ms=_percentile(delays, 0.99),
        max_ms=max(delays, default=float("nan")),
    )


def quiet_and_loaded(
    base_ws: str,
    env: dict,
    root: Path,
    token: str,
    migration_id: int,
    *,
    load: Callable[[float], object],
    load_name: str,
) -> tuple[Rate, Rate]:
    """Measured quiet, then while `load(seconds)` runs in a thread of its own."""
    follow = (base_ws, env, root, token, migration_id, SECONDS)
    quiet = measure(*follow)
    loader = threading.Thread(target=load, args=(SECONDS + 6,), daemon=True)
    loader.start()
    time.sleep(1)
    loaded = measure(*follow)
    loader.join()
    print(f"  websocket quiet:  {quiet.line()}", flush=True)
    print(f"  websocket loaded: {loaded.line()}  ({load_name})", flush=True)
    return quiet, loaded


def report(runs: list[tuple[Rate, Rate]]) -> bool:
    """Kept its rate: every update arrived, and as many per second under load as quiet."""
    kept = sum(
        loaded.received >= loaded.sent and loaded.per_second >= 0.95 * quiet.per_second
        for quiet, loaded in runs
    )
    print()
    print(
        f"websocket progress ({RATE_HZ}/s published): kept its rate under load in "
        f"{kept} of {len(runs)} runs; delay p99 quiet "
        + ", ".join(f"{q.p99_ms:.1f}" for q, _ in runs)
        + " ms, loaded "
        + ", ".join(f"{lo.p99_ms:.1f}" for _, lo in runs)
        + " ms"
    )
    return kept == len(runs)
