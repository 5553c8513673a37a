"""The migration progress socket, through the profile's channel layer: Redis, or the
in-memory layer under `make test-fast` (all in this one process, so it reaches)."""

import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from audit.events import EventType
from hosts.models import Host
from migrations_app.domain.progress import sample_from_job_stats
from migrations_app.models import Migration, MigrationStatus
from migrations_app.worker.lease import Lease
from migrations_app.worker.runner import _record_sample
from portal.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def migration(admin_user):
    source = Host.objects.create(name="src", address="192.0.2.20")
    destination = Host.objects.create(name="dst", address="192.0.2.21")
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(),
        vm_name="web-1",
        source=source,
        destination=destination,
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        status="migrating",
        claim_epoch=1,
        max_downtime_ms=500,
        timeout_s=600,
        started_at=timezone.now(),
    )


def _communicator(migration_id: int, user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/migrations/{migration_id}/"
    )
    communicator.scope["user"] = user
    return communicator


def _stats(remaining: int) -> dict:
    return {
        "type": 2,
        "time_elapsed": 1000,
        "data_total": 1000,
        "data_processed": 1000 - remaining,
        "data_remaining": remaining,
        "memory_iteration": 1,
        "memory_bps": 100,
    }


def test_snapshot_first_then_samples_in_order_then_final(migration, admin_user):
    lease = Lease(migration.pk, migration.claim_epoch, "test")

    def run_migration_steps() -> None:
        # What the engine does while a migration runs, committed and published.
        previous = 0.0
        for remaining in (900, 600, 300):
            sample = sample_from_job_stats(_stats(remaining), previous_percent=previous)
            previous = sample.percent
            _record_sample(migration, lease, sample)
        lease.change(migration, MigrationStatus.COMPLETING, EventType.MIGRATION_COMPLETING)
        lease.change(
            migration,
            MigrationStatus.SUCCEEDED,
            EventType.MIGRATION_SUCCEEDED,
            percent=100.0,
        )

    async def scenario():
        socket = _communicator(migration.pk, admin_user)
        connected, _ = await socket.connect()
        assert connected
        first = await socket.receive_json_from(timeout=5)
        await sync_to_async(run_migration_steps, thread_sensitive=False)()
        messages = [first]
        while True:
            message = await socket.receive_json_from(timeout=5)
            messages.append(message)
            if message["migration"]["status"] == "succeeded":
                break
        closed = await socket.receive_output(timeout=5)
        await socket.disconnect()
        return messages, closed

    messages, closed = async_to_sync(scenario)()
    assert [m["event"] for m in messages] == [
        "snapshot",
        "progress",
        "progress",
        "progress",
        "completing",
        "succeeded",
    ]
    assert messages[0]["migration"]["status"] == "migrating"
    assert [m["sample"]["percent"] for m in messages[1:4]] == [10.0, 40.0, 70.0]
    assert messages[-1]["migration"]["percent"] == 100
    assert closed["type"] == "websocket.close"


def test_reconnect_resumes_with_current_state_and_samples(migration, admin_user):
    lease = Lease(migration.pk, migration.claim_epoch, "test")
    _record_sample(migration, lease, sample_from_job_stats(_stats(500)))

    async def scenario():
        socket = _communicator(migration.pk, admin_user)
        assert (await socket.connect())[0]
        snapshot = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return snapshot

    snapshot = async_to_sync(scenario)()
    assert snapshot["migration"]["percent"] == 50.0
    assert [s["percent"] for s in snapshot["samples"]] == [50.0]


def test_refused_without_login(migration):
    async def scenario():
        socket = _communicator(migration.pk, AnonymousUser())
        connected, code = await socket.connect()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4401)


def test_refused_for_a_user_who_may_not_see_it(migration):
    stranger = get_user_model().objects.create_user(username="stranger", password="x" * 12)

    async def scenario():
        socket = _communicator(migration.pk, stranger)
        return await socket.connect()

    assert async_to_sync(scenario)() == (False, 4403)
