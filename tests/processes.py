"""Portal processes started by tests against the test database: task workers, the
ASGI server. They run as the demo runs them, in their own process groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


class Workers:
    """`manage.py run_workers` in its own process group, like the demo runs it."""

    def __init__(self, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "run_workers"]

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PORTAL_Q_WORKERS": "2",
            **self.env,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
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
    """daphne serving portal.asgi on 127.0.0.1:<port> (HTTP and websockets)."""

    def __init__(self, log: Path, port: int, env: dict[str, str] | None = None) -> None:
        super().__init__(log, env)
        self.port = port

    def command(self) -> list[str]:
        return [
            str(Path(sys.executable).with_name("daphne")),
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "portal.asgi:application",
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
