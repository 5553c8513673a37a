"""Migration batches without hypervisors: the pure decisions (table-tested), the API's
validation, the dispatcher's batch gate and the claim's, stop_on_failure, cancel, the
final status set once, and the batch's websocket. (Real batches: test_batches_lab.py.)"""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.domain.batch_rules import (
    Child,
    HostSlots,
    batch_children_to_cancel,
    batch_children_to_start,
    batch_gate_open,
    batch_progress,
    batch_status,
)
from migrations_app.domain.lifecycle import BatchStatus, MigrationStatus, Phase
from migrations_app.models import Migration, MigrationBatch
from migrations_app.scheduling.dispatch import migrations_dispatch_waiting
from migrations_app.worker.claim import ClaimOutcome, migration_claim
from migrations_app.worker.lease import Lease
from portal.routing import websocket_urlpatterns
from vms.models import VM

Q, CHK, MIG, OK, FAIL, CXL, ATT = (
    "queued",
    "checking",
    "migrating",
    "succeeded",
    "failed",
    "cancelled",
    "needs_attention",
)


def _kids(*statuses: str) -> list[Child]:
    return [Child(i + 1, s) for i, s in enumerate(statuses)]


# --- pure decisions -------------------------------------------------------------------


@pytest.mark.parametrize(
    "statuses, max_parallel, stop, cancel, expected",
    [
        ((Q, Q, Q), 1, False, False, [1]),
        ((Q, Q, Q), 2, False, False, [1, 2]),
        ((Q, Q, Q), 5, False, False, [1, 2, 3]),
        ((MIG, Q, Q), 1, False, False, []),
        ((MIG, Q, Q), 2, False, False, [2]),
        ((CHK, MIG, Q), 2, False, False, []),
        ((OK, Q, Q), 1, False, False, [2]),
        ((FAIL, Q, Q), 1, False, False, [2]),  # the others go on
        ((FAIL, Q, Q), 1, True, False, []),  # stop_on_failure: nothing more starts
        ((CXL, Q), 1, True, False, [2]),  # a cancelled child is no failure
        ((ATT, Q), 1, False, False, [2]),  # needs attention holds no worker
        ((Q, Q), 1, False, True, []),  # cancelled batch
        ((OK, OK), 1, False, False, []),
    ],
)
def test_children_to_start(statuses, max_parallel, stop, cancel, expected):
    children = _kids(*statuses)
    assert (
        batch_children_to_start(
            children=children,
            max_parallel=max_parallel,
            stop_on_failure=stop,
            cancel_requested=cancel,
        )
        == expected
    )
    gate = batch_gate_open(
        children=children, max_parallel=max_parallel, stop_on_failure=stop, cancel_requested=cancel
    )
    running = sum(s in (CHK, MIG) for s in statuses)
    assert gate == (running < max_parallel and not cancel and not (stop and FAIL in statuses))


# Evacuation-like: source 1, destinations X=2 and Y=3, at most 2 into each host.
X, Y = 2, 3


def _to(*rows: tuple[str, int]) -> list[Child]:
    return [Child(i + 1, status, 1, dest) for i, (status, dest) in enumerate(rows)]


@pytest.mark.parametrize(
    "rows, max_parallel, expected",
    [
        # Y freed a place; the next child in order goes to X (full): the one after it,
        # to Y, takes the place instead of the batch waiting for X (waves back to back).
        (((MIG, X), (OK, Y), (MIG, X), (MIG, Y), (Q, X), (Q, Y), (Q, X)), 4, [6]),
        # Both X places free: the first two for X, in order; Y is full.
        (((OK, X), (MIG, Y), (OK, X), (MIG, Y), (Q, Y), (Q, X), (Q, X), (Q, X)), 4, [6, 7]),
        # Children picked now count: two free batch places, one free place into Y.
        (((MIG, X), (MIG, X), (MIG, Y), (Q, X), (Q, Y), (Q, Y)), 5, [5]),
        # Nothing fits: nobody starts, whatever the batch's own places.
        (((MIG, X), (MIG, X), (Q, X)), 4, []),
    ],
)
def test_children_to_start_skip_a_child_whose_host_is_full(rows, max_parallel, expected):
    children = _to(*rows)
    running = [c for c in children if c.status in (CHK, MIG)]
    slots = HostSlots(
        outgoing={1: len(running)},
        incoming={h: sum(c.destination_id == h for c in running) for h in (X, Y)},
        max_outgoing=8,
        max_incoming=2,
    )
    picked = batch_children_to_start(
        children=children,
        max_parallel=max_parallel,
        stop_on_failure=False,
        cancel_requested=False,
        slots=slots,
    )
    assert picked == expected
    # The source's own limit holds too.
    tight = HostSlots(slots.outgoing, slots.incoming, max_outgoing=len(running), max_incoming=2)
    assert (
        batch_children_to_start(
            children=children,
            max_parallel=max_parallel,
            stop_on_failure=False,
            cancel_requested=False,
            slots=tight,
        )
        == []
    )


@pytest.mark.parametrize(
    "statuses, stop, cancel, expected",
    [
        ((Q, Q), False, False, []),
        ((FAIL, Q, MIG, Q), False, False, []),
        ((FAIL, Q, MIG, Q), True, False, [2, 4]),  # running ones run on
        ((OK, Q, Q), False, True, [2, 3]),
    ],
)
def test_children_to_cancel(statuses, stop, cancel, expected):
    children = _kids(*statuses)
    assert (
        batch_children_to_cancel(children=children, stop_on_failure=stop, cancel_requested=cancel)
        == expected
    )


@pytest.mark.parametrize(
    "statuses, stop, cancel, expected",
    [
        ((Q, Q), False, False, BatchStatus.QUEUED),
        ((CHK, Q), False, False, BatchStatus.RUNNING),
        ((OK, Q), False, False, BatchStatus.RUNNING),
        ((OK, ATT), False, False, BatchStatus.RUNNING),  # not settled yet
        ((OK, OK), False, False, BatchStatus.SUCCEEDED),
        ((OK, FAIL), False, False, BatchStatus.PARTIALLY_FAILED),
        ((OK, CXL), False, False, BatchStatus.PARTIALLY_FAILED),
        ((FAIL, FAIL), False, False, BatchStatus.FAILED),
        ((FAIL, CXL), True, False, BatchStatus.FAILED),
        ((OK, FAIL, CXL), True, False, BatchStatus.FAILED),  # stop_on_failure: failed
        ((OK, CXL), False, True, BatchStatus.CANCELLED),
        ((OK, OK), False, True, BatchStatus.SUCCEEDED),  # cancelled too late: all moved
        ((CXL, CXL), False, True, BatchStatus.CANCELLED),
    ],
)
def test_batch_status(statuses, stop, cancel, expected):
    got = batch_status(children=_kids(*statuses), stop_on_failure=stop, cancel_requested=cancel)
    assert got == expected


class _Row:
    def __init__(self, status, percent=0.0, total=None, processed=None, transferred=None):
        self.status = status
        self.percent = percent
        self.data_total_bytes = total
        self.data_processed_bytes = processed
        self.transferred_bytes = transferred


def test_progress_aggregates_children():
    progress = batch_progress(
        [
            _Row(OK, 100, total=1500, processed=1000, transferred=1200),
            _Row(MIG, 50, total=400, processed=200),
            _Row(FAIL, 10, total=None, processed=None),
            _Row(Q),
        ]
    )
    assert progress.vms_total == 4
    assert progress.vms_done == 2
    assert (progress.vms_succeeded, progress.vms_failed, progress.vms_running) == (1, 1, 1)
    assert progress.bytes_moved == 1200 + 200
    assert progress.bytes_total == 1200 + 400
    assert progress.percent == (100 + 50 + 100 + 0) / 4


# --- API ------------------------------------------------------------------------------


def _vm(host: Host, name: str) -> VM:
    return VM.objects.create(
        uuid=uuid.uuid4(),
        name=name,
        host=host,
        state="running",
        persistent=True,
        vcpus=1,
        memory_kib=262144,
        max_memory_kib=262144,
        last_synced_at=timezone.now(),
    )


@pytest.fixture
def fleet(db):
    """Three VM rows on host src, and a host dst: no hypervisor behind them."""
    source = Host.objects.create(name="src", address="192.0.2.10")
    destination = Host.objects.create(name="dst", address="192.0.2.11")
    vms = [_vm(source, f"web-{i}") for i in range(3)]
    return source, destination, vms


def _items(vms, destination="dst"):
    return [{"vm": str(vm.uuid), "destination": destination} for vm in vms]


def _create(client, **payload):
    return client.post("/api/migration-batches/", payload, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload, field, fragment",
    [
        ({"items": []}, "items", "may not be empty"),
        ({"items": None}, "items", "may not be null"),
        ({"items": "x"}, "items", "list"),
        ({"max_parallel": 0}, "max_parallel", "greater than or equal to 1"),
        ({"max_parallel": -3}, "max_parallel", "greater than or equal to 1"),
        ({"max_parallel": "many"}, "max_parallel", "valid integer"),
        ({"stop_on_failure": "perhaps"}, "stop_on_failure", "valid boolean"),
    ],
)
def test_bad_batch_fields_are_named(api, fleet, payload, field, fragment):
    _, _, vms = fleet
    response = _create(api, **{"items": _items(vms[:1]), **payload})
    assert response.status_code == 400, response.json()
    assert fragment in str(response.json()[field])
    assert not MigrationBatch.objects.exists() and not Migration.objects.exists()


@pytest.mark.django_db
def test_items_are_required(api, fleet):
    response = _create(api, max_parallel=1)
    assert response.status_code == 400
    assert response.json() == {"items": ["This field is required."]}


@pytest.mark.django_db
def test_duplicate_vm_is_400_on_items(api, fleet):
    _, _, vms = fleet
    response = _create(api, items=_items([vms[0], vms[1], vms[0]]))
    assert response.status_code == 400
    assert "web-0" in response.json()["items"][0]
    assert "more than once" in response.json()["items"][0]
    assert not Migration.objects.exists()


@pytest.mark.django_db
def test_unknown_vm_and_unknown_destination_are_named_per_item(api, fleet):
    _, _, vms = fleet
    unknown = str(uuid.uuid4())
    response = _create(
        api,
        items=[
            {"vm": str(vms[0].uuid), "destination": "dst"},
            {"vm": unknown, "destination": "dst"},
            {"vm": str(vms[1].uuid), "destination": "nowhere"},
            {"vm": "not-a-uuid", "destination": "dst"},
        ],
    )
    assert response.status_code == 400
    errors = response.json()["items"]
    assert errors[0] == {}
    assert unknown in errors[1]["vm"][0]
    assert "nowhere is not a registered host" in errors[2]["destination"][0]
    assert "valid UUID" in errors[3]["vm"][0]
    assert not Migration.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options, field, fragment",
    [
        ({"max_downtime_ms": 5}, "max_downtime_ms", "100"),
        ({"storage": "teleport"}, "storage", "valid choice"),
        ({"transport": "tunnelled", "parallel_connections": 4}, "parallel_connections", "tunnel"),
        ({"compression_level": 3}, "compression_level", ""),
    ],
)
def test_invalid_options_are_400_under_options(api, fleet, options, field, fragment):
    _, _, vms = fleet
    response = _create(api, items=_items(vms[:2]), options=options)
    assert response.status_code == 400, response.json()
    assert fragment in str(response.json()["options"][field])
    assert not Migration.objects.exists()


@pytest.mark.django_db
def test_an_items_option_override_is_judged_on_the_merged_options(api, fleet):
    _, _, vms = fleet
    items = _items(vms[:2])
    items[1]["options"] = {"storage": "copy"}  # copied disks over a tunnel: refused
    response = _create(api, items=items, options={"transport": "tunnelled"})
    assert response.status_code == 400, response.json()
    errors = response.json()["items"]
    assert errors[0] == {}
    assert "storage" in errors[1]["options"]


@pytest.mark.django_db
def test_a_missing_destination_is_placed_by_the_ranking_or_asked_for(api, fleet):
    _, _, vms = fleet
    response = _create(api, items=[{"vm": str(vms[0].uuid)}])
    # dst was never contacted: the ranking finds no fit host and says why.
    assert response.status_code == 400
    assert response.json()["items"] == [
        "No fit destination for web-0 (dst: not contacted yet: refresh it first): give one."
    ]


@pytest.mark.django_db
def test_viewer_cannot_create_nor_cancel(viewer_api, fleet):
    _, _, vms = fleet
    assert _create(viewer_api, items=_items(vms)).status_code == 403


@pytest.mark.django_db
def test_a_vm_already_migrating_is_409_and_nothing_is_created(api, fleet):
    _, _, vms = fleet
    assert (
        api.post(
            f"/api/vms/{vms[1].uuid}/migrate/", {"remote_host": "dst"}, format="json"
        ).status_code
        == 202
    )
    response = _create(api, items=_items(vms))
    assert response.status_code == 409
    assert "web-1 is already being migrated" in response.json()["detail"]
    assert not MigrationBatch.objects.exists()
    assert Migration.objects.count() == 1


@pytest.mark.django_db
def test_two_dispatchers_at_once_hand_a_child_to_the_broker_once(
    api, fleet, django_capture_on_commit_callbacks, monkeypatch
):
    """Every migration's end dispatches, often at the same moment: each reads the same
    queued child; only the first takes its turn (compare-and-set on enqueued_at)."""
    from migrations_app.scheduling import dispatch

    _, _, vms = fleet
    with django_capture_on_commit_callbacks(execute=False):
        response = _create(api, items=_items(vms)[:1], max_parallel=1)
    child = Migration.objects.get(batch_id=response.json()["id"])
    sent = []
    monkeypatch.setattr(dispatch, "async_task", lambda *args, **kwargs: sent.append(args[1]))
    stale = Migration.objects.get(pk=child.pk)  # what a second dispatcher read meanwhile
    assert migrations_dispatch_waiting() == [child.pk]
    assert dispatch._enqueue_turn_taken(stale) is False
    assert sent == [child.pk]
    # A broker that refuses it leaves the child as it was: the next dispatch tries again.
    Migration.objects.filter(pk=child.pk).update(enqueued_at=None)

    def refused(*args, **kwargs):
        raise ConnectionError("redis down")

    monkeypatch.setattr(dispatch, "async_task", refused)
    assert migrations_dispatch_waiting() == []
    assert Migration.objects.get(pk=child.pk).enqueued_at is None


@pytest.mark.django_db
def test_accepted_batch_has_queued_children_and_audit(
    api, fleet, django_capture_on_commit_callbacks
):
    _, _, vms = fleet
    items = _items(vms)
    items[2]["destination"] = "192.0.2.11"  # by address
    items[1]["options"] = {"storage": "copy"}
    with django_capture_on_commit_callbacks(execute=True):
        response = _create(
            api, items=items, options={"bandwidth_mib_s": 20}, max_parallel=2, stop_on_failure=True
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert response["Location"] == f"/api/migration-batches/{body['id']}/"
    assert body["status"] == "queued"
    assert (body["max_parallel"], body["stop_on_failure"]) == (2, True)
    assert [c["vm_name"] for c in body["children"]] == ["web-0", "web-1", "web-2"]
    assert {c["destination"] for c in body["children"]} == {"dst"}
    assert [c["storage"] for c in body["children"]] == ["shared", "copy", "shared"]
    assert body["progress"]["vms_total"] == 3 and body["progress"]["vms_done"] == 0
    children = list(Migration.objects.filter(batch_id=body["id"]).order_by("pk"))
    assert all(c.bandwidth_mib_s == 20 for c in children)
    # The dispatcher ran after commit: the first two went to the broker, not the third.
    assert [c.enqueued_at is not None for c in children] == [True, True, False]
    assert all(c.phase == Phase.WAITING_FOR_BATCH for c in children)
    event = AuditEvent.objects.get(event_type=EventType.BATCH_REQUESTED)
    assert event.target_id == str(body["id"])
    assert [c["vm_name"] for c in event.detail["children"]] == ["web-0", "web-1", "web-2"]
    assert AuditEvent.objects.filter(event_type=EventType.MIGRATION_REQUESTED).count() == 3
    # Listed, and readable one by one; each child is an ordinary migration.
    assert [b["id"] for b in api.get("/api/migration-batches/").json()["results"]] == [body["id"]]
    assert api.get(f"/api/migrations/{children[0].pk}/").json()["batch"] == body["id"]
    listed = api.get(f"/api/migrations/?batch={body['id']}").json()["results"]
    assert sorted(m["id"] for m in listed) == [c.pk for c in children]


@pytest.mark.django_db
def test_the_schema_documents_batches(api):
    schema = api.get("/api/schema/?format=json").json()
    assert "/api/migration-batches/" in schema["paths"]
    assert "/api/migration-batches/{id}/cancel/" in schema["paths"]
    request = schema["components"]["schemas"]["BatchCreate"]
    assert {"items", "options", "stop_on_failure", "max_parallel"} <= set(request["properties"])


# --- running: the batch gate, stop_on_failure, cancel, final status once ---------------


def _batch(api, vms, **payload) -> MigrationBatch:
    response = _create(api, items=_items(vms), **payload)
    assert response.status_code == 202, response.json()
    return MigrationBatch.objects.get(pk=response.json()["id"])


def _children(batch):
    return list(batch.children.order_by("pk"))


def _end(child: Migration, status: str) -> None:
    """What a worker leaves behind (the worker's own transitions, under its lease)."""
    claim = migration_claim(child.pk, "test-worker")
    assert claim.outcome == ClaimOutcome.CLAIMED, claim
    lease, migration = claim.lease, claim.migration
    if status == MigrationStatus.FAILED:
        lease.change(migration, status, EventType.MIGRATION_FAILED, error="boom")
    else:
        migration = lease.change(migration, MigrationStatus.MIGRATING, EventType.MIGRATION_STARTED)
        migration = lease.change(
            migration, MigrationStatus.COMPLETING, EventType.MIGRATION_COMPLETING
        )
        lease.change(migration, status, EventType.MIGRATION_SUCCEEDED, percent=100.0)


@pytest.mark.django_db(transaction=True)
def test_the_claim_holds_max_parallel_and_the_batch_runs_to_partial_failure(api, fleet):
    _, _, vms = fleet
    batch = _batch(api, vms, max_parallel=1)
    first, second, third = _children(batch)
    assert migration_claim(first.pk, "w1").outcome == ClaimOutcome.CLAIMED
    # Enqueued out of turn (a redelivery, a race): the claim refuses and un-enqueues it.
    assert migration_claim(second.pk, "w2").outcome == ClaimOutcome.WAIT
    second.refresh_from_db()
    assert (second.status, second.phase, second.enqueued_at) == (
        "queued",
        Phase.WAITING_FOR_BATCH,
        None,
    )
    batch.refresh_from_db()
    assert batch.status == BatchStatus.RUNNING and batch.started_at is not None
    first.refresh_from_db()
    Lease(first.pk, first.claim_epoch, "w1").change(
        first,
        MigrationStatus.FAILED,
        EventType.MIGRATION_FAILED,
        error="destination_differs: lab-1 is the host the VM runs on now",
    )
    assert migrations_dispatch_waiting() == [second.pk]  # its turn now; not the third
    _end(second, MigrationStatus.SUCCEEDED)
    assert migrations_dispatch_waiting() == [third.pk]
    _end(third, MigrationStatus.SUCCEEDED)
    migrations_dispatch_waiting()
    migrations_dispatch_waiting()  # again: the final status is written once
    batch.refresh_from_db()
    assert batch.status == BatchStatus.PARTIALLY_FAILED
    assert batch.finished_at is not None
    finished = AuditEvent.objects.filter(event_type=EventType.BATCH_FINISHED)
    assert finished.count() == 1
    assert finished.get().after == {"status": "partially_failed"}
    assert finished.get().detail["failed"][0]["vm_name"] == "web-0"
    body = api.get(f"/api/migration-batches/{batch.pk}/").json()
    assert body["progress"]["vms_done"] == 3
    assert body["progress"]["vms_failed"] == 1 and body["progress"]["vms_succeeded"] == 2
    assert "host the VM runs on now" in body["children"][0]["error"]


@pytest.mark.django_db(transaction=True)
def test_stop_on_failure_cancels_the_children_not_started(api, fleet):
    _, _, vms = fleet
    batch = _batch(api, vms, max_parallel=1, stop_on_failure=True)
    first, second, third = _children(batch)
    _end(first, MigrationStatus.FAILED)
    assert migrations_dispatch_waiting() == []
    batch.refresh_from_db()
    assert batch.status == BatchStatus.FAILED
    assert [c.status for c in _children(batch)] == ["failed", "cancelled", "cancelled"]
    assert "stop_on_failure" in _children(batch)[1].error
    # A task of a cancelled child that still arrives does nothing.
    assert migration_claim(second.pk, "late").outcome == ClaimOutcome.NOT_MINE
    assert AuditEvent.objects.filter(event_type=EventType.BATCH_FINISHED).count() == 1
    assert (
        AuditEvent.objects.filter(
            event_type=EventType.MIGRATION_CANCELLED, target_id__in=[second.pk, third.pk]
        ).count()
        == 2
    )


@pytest.mark.django_db(transaction=True)
def test_cancel_cancels_queued_children_and_ends_cancelled(api, fleet):
    _, _, vms = fleet
    batch = _batch(api, vms, max_parallel=2)
    first, second, third = _children(batch)
    _end(first, MigrationStatus.SUCCEEDED)
    response = api.post(f"/api/migration-batches/{batch.pk}/cancel/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "cancelled"
    assert [c["status"] for c in body["children"]] == ["succeeded", "cancelled", "cancelled"]
    assert api.post(f"/api/migration-batches/{batch.pk}/cancel/").status_code == 409
    assert AuditEvent.objects.filter(event_type=EventType.BATCH_CANCELLED).count() == 1
    finished = AuditEvent.objects.get(event_type=EventType.BATCH_FINISHED)
    assert finished.after == {"status": "cancelled"}
    # Its VMs may be migrated again.
    assert _create(api, items=_items(vms[1:])).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_cancel_asks_a_running_child_to_cancel(api, fleet):
    _, _, vms = fleet
    batch = _batch(api, vms[:2], max_parallel=1)
    first, second = _children(batch)
    assert migration_claim(first.pk, "w1").outcome == ClaimOutcome.CLAIMED
    body = api.post(f"/api/migration-batches/{batch.pk}/cancel/").json()
    assert body["status"] == "running"  # until its running child ends
    first.refresh_from_db()
    assert first.cancel_requested_at is not None and first.status == "checking"
    assert [c["status"] for c in body["children"]] == ["checking", "cancelled"]


# --- the batch's websocket --------------------------------------------------------------


def _socket(batch_id: int, user) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/migration-batches/{batch_id}/"
    )
    socket.scope["user"] = user
    return socket


@pytest.mark.django_db(transaction=True)
def test_socket_sends_snapshot_then_child_updates_then_final(api, admin_user, fleet):
    _, _, vms = fleet
    batch = _batch(api, vms[:2], max_parallel=1)
    first, second = _children(batch)

    def first_ends() -> None:
        _end(first, MigrationStatus.SUCCEEDED)
        migrations_dispatch_waiting()

    def second_ends() -> None:
        _end(second, MigrationStatus.FAILED)
        migrations_dispatch_waiting()

    async def scenario():
        socket = _socket(batch.pk, admin_user)
        assert (await socket.connect())[0]
        messages = [await socket.receive_json_from(timeout=5)]
        await sync_to_async(first_ends, thread_sensitive=False)()
        while messages[-1]["batch"]["progress"]["vms_done"] < 1:
            messages.append(await socket.receive_json_from(timeout=5))
        await sync_to_async(second_ends, thread_sensitive=False)()
        while messages[-1]["batch"]["status"] not in ("partially_failed", "failed"):
            messages.append(await socket.receive_json_from(timeout=5))
        closed = await socket.receive_output(timeout=5)
        await socket.disconnect()
        return messages, closed

    messages, closed = async_to_sync(scenario)()
    assert messages[0]["event"] == "snapshot"
    assert messages[0]["batch"]["status"] == "queued"
    # Child rows change live: the first child succeeded while the batch still ran.
    live = [m for m in messages if m["batch"]["progress"]["vms_done"] == 1][0]
    assert live["batch"]["children"][0]["status"] == "succeeded"
    assert live["batch"]["status"] not in ("partially_failed", "failed")
    # Never backwards: each message is read when sent (events.batch_publish).
    done = [m["batch"]["progress"]["vms_done"] for m in messages]
    assert done == sorted(done)
    last = messages[-1]
    assert last["batch"]["status"] == "partially_failed"
    assert last["batch"]["progress"]["vms_done"] == 2
    assert closed["type"] == "websocket.close"


@pytest.mark.django_db(transaction=True)
def test_a_late_event_still_sends_the_batch_as_it_is_now(admin_user, api, fleet):
    """An event published by a worker that committed earlier can arrive after another
    worker's later one: the socket sends the batch as the database has it when the
    event is handled, never an older state (here: an event carrying the state before
    the first child ended, as publishers used to send)."""
    from channels.layers import get_channel_layer

    from migrations_app.events import batch_group

    _, _, vms = fleet
    batch = _batch(api, vms[:2], max_parallel=2)
    first, _second = _children(batch)

    async def scenario():
        socket = _socket(batch.pk, admin_user)
        assert (await socket.connect())[0]
        snapshot = await socket.receive_json_from(timeout=5)
        await sync_to_async(_end, thread_sensitive=False)(first, MigrationStatus.SUCCEEDED)
        message = snapshot
        while message["batch"]["progress"]["vms_done"] < 1:
            message = await socket.receive_json_from(timeout=5)
        while not await socket.receive_nothing(timeout=0.5):  # the rest of _end's events
            await socket.receive_json_from(timeout=5)
        await get_channel_layer().group_send(
            batch_group(batch.pk),
            {"type": "batch.update", "event": "child.checking", "batch": snapshot["batch"]},
        )
        late = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return snapshot, late

    snapshot, late = async_to_sync(scenario)()
    assert snapshot["batch"]["progress"]["vms_done"] == 0
    assert late["event"] == "child.checking"
    assert late["batch"]["progress"]["vms_done"] == 1


@pytest.mark.django_db(transaction=True)
def test_socket_refuses_anonymous_and_strangers(api, fleet, viewer_user):
    _, _, vms = fleet
    batch = _batch(api, vms[:1])

    async def connect(user):
        socket = _socket(batch.pk, user)
        return await socket.connect()

    assert async_to_sync(connect)(AnonymousUser()) == (False, 4401)
    assert async_to_sync(connect)(viewer_user) == (False, 4403)


# --- the batch page (server side; live in a browser: test_browser_batches.py) ---------


@pytest.mark.django_db
def test_batch_page_shows_a_row_per_vm_and_is_only_for_who_may_see_it(
    api, client, admin_user, viewer_user, fleet
):
    _, _, vms = fleet
    batch = _batch(api, vms[:2], max_parallel=1)
    client.force_login(admin_user)
    page = client.get(f"/migration-batches/{batch.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    for child in _children(batch):
        assert f'data-child="{child.pk}"' in html
    assert "web-0" in html and "web-1" in html
    assert 'data-action="cancel-batch"' in html
    assert 'id="batch-data"' in html and "portal/batch.js" in html
    # A child's page links back to its batch.
    child_page = client.get(f"/migrations/{_children(batch)[0].pk}/").content.decode()
    assert f'href="/migration-batches/{batch.pk}/"' in child_page
    client.force_login(viewer_user)
    assert client.get(f"/migration-batches/{batch.pk}/").status_code == 404
    assert api.get("/migration-batches/999999/").status_code in (302, 404)
