"""Migration batches on the real lab hosts, run by real django-q2 worker processes: the
dispatcher (after each migration, and the reconciler) starts the children in turn;
each child is an ordinary migration checked with virsh."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from migrations_app.models import Migration, MigrationBatch
from tests import labtools
from tests.labtools import events_of

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

MiB = 2**20
ORDINARY_SUCCESS = [
    "migration.requested",
    "migration.checking",
    "migration.started",
    "migration.completing",
    "migration.succeeded",
]


def _item(vm, destination, **options) -> dict:
    item = {"vm": vm.uuid, "destination": destination.name}
    if options:
        item["options"] = options
    return item


def _run_batch(api, items, **payload) -> tuple[MigrationBatch, list[Migration]]:
    response = api.post("/api/migration-batches/", {"items": items, **payload}, format="json")
    assert response.status_code == 202, response.json()
    batch_id = response.json()["id"]
    batch = labtools.wait_for(
        lambda: MigrationBatch.objects.filter(pk=batch_id, finished_at__isnull=False).first(),
        timeout=300,
        what=f"batch {batch_id} to finish",
        interval=0.5,
    )
    return batch, list(batch.children.order_by("pk"))


def test_a_batch_of_two_vms_one_at_a_time(api, linux_vm, tiny_vm, running_workers):
    linux_to = linux_vm.other(linux_vm.source)
    tiny_to = tiny_vm.other(tiny_vm.source)
    batch, children = _run_batch(
        api,
        # tiny_vm's disk is on the host's local storage: it is copied.
        [_item(linux_vm, linux_to), _item(tiny_vm, tiny_to, storage="copy")],
        options={"delete_source": True},
        max_parallel=1,
    )
    assert batch.status == "succeeded", [(c.vm_name, c.status, c.error) for c in children]
    assert [c.status for c in children] == ["succeeded", "succeeded"]
    # Ordinary migrations: the same records, events and outcome as one requested alone.
    for child in children:
        assert events_of(child.pk) == ORDINARY_SUCCESS
        assert child.percent == 100 and child.completed_stats
    assert [c.storage for c in children] == ["shared", "copy"]
    # max_parallel 1: the second started only after the first had ended.
    assert children[1].started_at >= children[0].finished_at
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {linux_to.name: "running"}
    assert labtools.where(tiny_vm.hosts, tiny_vm.uuid) == {tiny_to.name: "running"}

    body = api.get(f"/api/migration-batches/{batch.pk}/").json()
    progress = body["progress"]
    assert (progress["vms_done"], progress["vms_total"], progress["vms_succeeded"]) == (2, 2, 2)
    assert progress["percent"] == 100
    assert progress["bytes_moved"] == sum(c.transferred_bytes for c in children)
    assert progress["bytes_moved"] > 100 * MiB  # the Linux guest's filled RAM crossed
    assert progress["bytes_moved"] == progress["bytes_total"]  # done: all of it
    batch_events = AuditEvent.objects.filter(target_type="migrations_app.migrationbatch")
    assert list(batch_events.order_by("id").values_list("event_type", flat=True)) == [
        "batch.requested",
        "batch.finished",
    ]


def test_a_child_that_cannot_move_fails_and_the_rest_goes_on(
    api, linux_vm, tiny_vm, running_workers
):
    stays = linux_vm.source
    tiny_to = tiny_vm.other(tiny_vm.source)
    batch, children = _run_batch(
        api,
        # To the host it runs on: its pre-check refuses it.
        [_item(linux_vm, stays), _item(tiny_vm, tiny_to, storage="copy")],
        max_parallel=1,
        stop_on_failure=False,
    )
    assert batch.status == "partially_failed"
    failed, moved = children
    assert (failed.status, failed.failure_reason) == ("failed", "precheck")
    assert "is the host the VM runs on now" in failed.error
    assert moved.status == "succeeded"
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [stays.name]
    assert labtools.running_on(tiny_vm.hosts, tiny_vm.uuid) == [tiny_to.name]
    body = api.get(f"/api/migration-batches/{batch.pk}/").json()
    assert body["progress"]["vms_failed"] == 1 and body["progress"]["vms_succeeded"] == 1
    assert "is the host the VM runs on now" in body["children"][0]["error"]
    finished = AuditEvent.objects.get(event_type="batch.finished", target_id=str(batch.pk))
    assert finished.after == {"status": "partially_failed"}
    assert [f["vm_name"] for f in finished.detail["failed"]] == [failed.vm_name]


def test_stop_on_failure_stops_the_batch(api, linux_vm, tiny_vm, running_workers):
    stays = linux_vm.source
    tiny_from = tiny_vm.source
    batch, children = _run_batch(
        api,
        [_item(linux_vm, stays), _item(tiny_vm, tiny_vm.other(tiny_from), storage="copy")],
        max_parallel=1,
        stop_on_failure=True,
    )
    assert batch.status == "failed"
    failed, stopped = children
    assert failed.status == "failed" and failed.failure_reason == "precheck"
    assert stopped.status == "cancelled"
    assert stopped.started_at is None and "stop_on_failure" in stopped.error
    # Neither VM moved.
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [stays.name]
    assert labtools.running_on(tiny_vm.hosts, tiny_vm.uuid) == [tiny_from.name]
    assert events_of(stopped.pk) == ["migration.requested", "migration.cancelled"]


def test_the_batch_goes_on_after_its_workers_are_killed(api, linux_vm, tiny_vm, running_workers):
    """Nothing of a batch lives in a worker: killed mid-batch and restarted, the
    reconciler settles the running child and the dispatcher starts the next."""
    linux_from = linux_vm.source
    tiny_to = tiny_vm.other(tiny_vm.source)
    response = api.post(
        "/api/migration-batches/",
        {
            "items": [
                # Slower than the guest dirties its memory: still running when killed.
                _item(linux_vm, linux_vm.other(linux_from), bandwidth_mib_s=8),
                _item(tiny_vm, tiny_to, storage="copy"),
            ],
            "max_parallel": 1,
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    batch_id = response.json()["id"]
    first, second = Migration.objects.filter(batch_id=batch_id).order_by("pk")
    labtools.wait_for(
        lambda: Migration.objects.filter(pk=first.pk, status="migrating", percent__gte=3).exists(),
        timeout=90,
        what="the first child to be migrating",
    )
    running_workers.kill()  # SIGKILL the whole worker process group
    second.refresh_from_db()
    assert (second.status, second.phase) == ("queued", "waiting_for_batch")

    running_workers.start()  # run_workers reconciles at start, then every 15 s
    batch = labtools.wait_for(
        lambda: MigrationBatch.objects.filter(pk=batch_id, finished_at__isnull=False).first(),
        timeout=240,
        what=f"batch {batch_id} to finish after the restart",
        interval=0.5,
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status in ("succeeded", "failed"), first.status
    assert second.status == "succeeded", second.error
    assert second.started_at >= first.finished_at  # still one at a time
    assert batch.status == ("succeeded" if first.status == "succeeded" else "partially_failed")
    # Never lost, never duplicated.
    assert len(labtools.running_on(linux_vm.hosts, linux_vm.uuid)) == 1
    assert labtools.running_on(tiny_vm.hosts, tiny_vm.uuid) == [tiny_to.name]
    assert (
        AuditEvent.objects.filter(event_type="batch.finished", target_id=str(batch_id)).count() == 1
    )
