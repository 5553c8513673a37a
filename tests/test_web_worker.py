"""The web tier spreads new connections over its workers through the kernel
(SO_REUSEPORT: gunicorn's `reuse_port`, one listening socket per worker;
deploy/gunicorn.conf.py), not through an event loop of its own: on one shared socket,
whichever worker woke first accepted every waiting connection (docs/performance.md)."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import time
from pathlib import Path

from portal.web_worker import PortalUvicornWorker
from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "gunicorn.conf.py"


async def pid_app(scope, receive, send) -> None:
    """Answers with the pid of the worker that serves the connection."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = str(os.getpid()).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _conf(bind: str) -> dict:
    env = {**os.environ, "PORTAL_WEB_BIND": bind}
    old = os.environ.copy()
    os.environ.update(env)
    try:
        return runpy.run_path(str(CONF))
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_tcp_binds_get_one_socket_per_worker_and_a_unix_socket_stays_shared():
    assert _conf("127.0.0.1:8000")["reuse_port"] is True
    # Every worker would bind its own socket at the one path: only the last is reached.
    assert _conf("unix:/run/portal/web.sock")["reuse_port"] is False


def test_the_worker_runs_uvicorn_s_own_loop():
    from uvicorn.config import Config

    config = Config(app=None, **PortalUvicornWorker.CONFIG_KWARGS)
    assert config.loop == "auto"  # no event loop of the portal's own any more
    assert "_accept_connection" not in vars(PortalUvicornWorker)


def _serving_pid(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return int(answer.split(b"\r\n\r\n", 1)[1])


def test_the_kernel_spreads_new_connections_over_the_workers(tmp_path):
    """32 connections over 2 workers with the tier's own gunicorn settings: both serve
    (all on one worker by chance: 2 in 2**32)."""
    port = free_port()
    env = {**os.environ, "PORTAL_WEB_BIND": f"127.0.0.1:{port}", "PORTAL_WEB_WORKERS": "2"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(CONF)]
    cmd += ["-k", "uvicorn_worker.UvicornWorker", "tests.test_web_worker:pid_app"]
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _serving_pid(port)
                break
            except (OSError, ValueError, IndexError):
                assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
                assert time.monotonic() < deadline, "gunicorn did not answer in 30 s"
                time.sleep(0.2)
        time.sleep(1)  # the second worker's socket
        # Both workers listen, each on its own socket (the master on none).
        listening = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(listening) == 2, listening
        pids = [_serving_pid(port) for _ in range(32)]
        assert len(set(pids)) == 2, pids
        assert server.pid not in pids
    finally:
        server.terminate()
        server.wait(30)
        log.close()
