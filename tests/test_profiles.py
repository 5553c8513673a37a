"""The settings profile in use really works: database, channel layer, task broker."""

import os
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django_q.brokers import get_broker
from django_q.models import Schedule


@pytest.mark.django_db
def test_database_matches_profile():
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        assert connection.vendor == "postgresql"
    else:
        assert connection.vendor == "sqlite"
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone()[0].lower() == "wal"
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] >= 20000


@pytest.mark.redis
def test_redis_matches_profile():
    if os.environ.get("REDIS_URL"):
        assert settings.REDIS_URL == os.environ["REDIS_URL"]
    else:
        # Default profile: the private redis-server on a socket in the data folder.
        assert settings.REDIS_URL == f"unix://{settings.DATA_DIR}/run/redis.sock"


@pytest.mark.redis
def test_channel_layer_round_trip_through_redis():
    layer = get_channel_layer()
    assert type(layer).__name__ == "RedisChannelLayer"
    group = f"profile-test-{uuid.uuid4().hex}"

    async def round_trip():
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "probe", "value": 42})
        message = await layer.receive(channel)
        await layer.group_discard(group, channel)
        return message

    assert async_to_sync(round_trip)() == {"type": "probe", "value": 42}


@pytest.mark.redis
def test_task_broker_reaches_redis():
    broker = get_broker(f"profile-test-{uuid.uuid4().hex}")
    assert broker.ping() is True
    task_id = broker.enqueue("payload")
    assert broker.queue_size() == 1
    assert broker.dequeue()[0][1] == b"payload"
    broker.delete_queue()
    assert task_id


@pytest.mark.django_db
def test_inventory_sync_is_scheduled():
    schedule = Schedule.objects.get(name="inventory-sync")
    assert schedule.func == "listeners.tasks.poll_hosts"
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == settings.INVENTORY_SYNC_MINUTES
    assert schedule.repeats == -1


def test_a_sqlite_url_gets_the_same_locking_options(tmp_path):
    """Worker and server processes get the test database as a sqlite:/// URL: they must
    wait for the write lock like the default profile does, not fail at once."""
    import subprocess
    import sys

    code = (
        "import django; django.setup(); from django.conf import settings; "
        "o = settings.DATABASES['default']['OPTIONS']; print(o['timeout'], o['transaction_mode'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
        },
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert result.stdout.split() == ["20", "IMMEDIATE"], result.stderr


def test_settings_write_nothing_at_import_and_the_secret_key_is_made_once(tmp_path):
    """Importing the settings (a test run as another user, a read-only checkout) writes
    nothing; the data folder's secret key is made on first use, 0600, then reused."""
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "PORTAL_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="portal.settings", PORTAL_DATA_DIR=str(data_dir))
    import_only = (
        f"import pathlib, portal.settings; print(pathlib.Path({str(data_dir)!r}).exists())"
    )
    use_key = (
        "import django; django.setup(); from django.conf import settings as s; print(s.SECRET_KEY)"
    )

    def run(code: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert run(import_only) == "False"
    first = run(use_key)
    assert len(first) > 40
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    assert run(use_key) == first
