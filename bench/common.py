"""What the benchmarks share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")


def scratch_environment(data_dir: Path, settings: dict[str, str]) -> None:
    """A lab bench's own data folder, its own redis (a socket there, so REDIS_URL is
    dropped), `settings` in the environment, and a scratch SQLite database unless
    DATABASE_URL names one: records of an earlier, interrupted run must not count.
    Call before setup_django()."""
    os.environ["PORTAL_DATA_DIR"] = str(data_dir)
    os.environ.update(settings)
    os.environ.pop("REDIS_URL", None)
    if not os.environ.get("DATABASE_URL"):
        data_dir.mkdir(exist_ok=True, mode=0o700)
        for stale in data_dir.glob("bench.sqlite3*"):
            stale.unlink()
        os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench.sqlite3'}"


def lab_hosts_register(actor, config, lab_hosts) -> None:
    """Register the lab's hosts (transport tcp, the lab's shared folder) that are not
    registered yet. After setup_django()."""
    from hosts import services as host_services
    from hosts.models import Host
    from lab import layout

    shared = [str(layout.shared_storage_dir(config))]
    for lab_host in lab_hosts:
        if not Host.objects.filter(address=lab_host.address).exists():
            host_services.host_create(
                actor=actor,
                name=lab_host.name,
                address=lab_host.address,
                transport="tcp",
                shared_storage_paths=shared,
            )


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()


def seed_history(env: dict[str, str] | None = None, **counts: int) -> str:
    """Run bench/seed_history.py with `counts` as options on `env`'s database; its output."""
    options = [f"--{name.replace('_', '-')}={value}" for name, value in counts.items()]
    script = str(ROOT / "bench" / "seed_history.py")
    result = subprocess.run(
        [PY, script, *options], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"seed_history failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile, p in 0..1."""
    values = sorted(values)
    return values[min(len(values) - 1, round(p * (len(values) - 1)))]


def stop(process: subprocess.Popen, *, group: bool = False, timeout: float = 30) -> None:
    """SIGTERM (to its process group if `group`), SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(process.pid, sig) if group else process.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(10)
