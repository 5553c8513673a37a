"""Portal processes started by tests against the test database: task workers and the
production web tier (scripts/web.sh: gunicorn with uvicorn ASGI workers). They run as
the demo runs them, each in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def subprocess_database_url() -> str:
    """The URL of the database this test session uses, for the worker processes."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or "postgres"
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Workers:
    """`manage.py run_workers` in its own process group, like the demo runs it."""

    def __init__(self, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "run_workers"]

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PORTAL_Q_WORKERS": "2",
            **self.env,
        }

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.process_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP the whole group: alive, but not running (a stalled worker)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)


class PortalServer(Workers):
    """The production web tier, `scripts/web.sh` (deploy/gunicorn.conf.py): a gunicorn
    master with `web_workers` uvicorn worker processes serving portal.asgi (HTTP and
    websockets) on 127.0.0.1:<port>. The master and its workers share one process
    group: `kill()` takes them all, as a crashed machine would."""

    def __init__(
        self,
        log: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        web_workers: int = 2,
    ) -> None:
        super().__init__(log, env)
        self.port = port
        self.web_workers = web_workers

    def command(self) -> list[str]:
        return ["bash", str(ROOT / "scripts" / "web.sh")]

    def process_env(self) -> dict[str, str]:
        return {
            **super().process_env(),
            "PORTAL_WEB_BIND": f"127.0.0.1:{self.port}",
            "PORTAL_WEB_WORKERS": str(self.web_workers),
            **self.env,
        }

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop), then SIGKILL if open websockets or
        streams keep it past 10 s."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole group, also when the master is gone already: its uvicorn
        workers must not outlive it."""
        if not self.process:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        if self.process.poll() is None:
            self.process.wait(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_serving(self, timeout: float = 60) -> None:
        """Until /healthz answers 200; fails with the log's tail if the master exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the web tier exited ({self.process.returncode}):\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(
            f"the web tier did not answer in {timeout:g} s:\n{self.log.read_text()[-3000:]}"
        )


class Listeners(Workers):
    """`manage.py listen_hosts` alone: the hosts' event listeners of one node."""

    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "listen_hosts"]
