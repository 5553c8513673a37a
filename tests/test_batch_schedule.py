"""A scheduled batch: every child waits as `scheduled` until the reconciler queues it,
and a child whose window closes first fails (window_closed), which the batch reports.
No hypervisor is needed: the clock is moved with `now=` (as in test_schedule.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from migrations_app.domain.lifecycle import BatchStatus, FailureReason, MigrationStatus
from migrations_app.models import Migration, MigrationBatch
from migrations_app.scheduling.batch_turns import batches_advance
from migrations_app.scheduling.schedule import migrations_schedule_run

pytestmark = pytest.mark.django_db


def _at(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def _batch(api, vm, **payload):
    body = {"items": [{"vm": str(vm.uuid), "destination": "dst"}], **payload}
    return api.post("/api/migration-batches/", body, format="json")


def test_a_scheduled_batch_waits_and_its_children_are_queued_when_due(api, vm):
    response = _batch(api, vm, not_before=_at(3600), window_end=_at(7200))
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == BatchStatus.QUEUED
    assert body["not_before"] and body["window_end"]
    child = Migration.objects.get(batch_id=body["id"])
    assert child.status == MigrationStatus.SCHEDULED
    assert child.enqueued_at is None
    assert (child.not_before.isoformat(), child.window_end.isoformat()) == (
        MigrationBatch.objects.get(pk=body["id"]).not_before.isoformat(),
        MigrationBatch.objects.get(pk=body["id"]).window_end.isoformat(),
    )
    events = AuditEvent.objects.filter(
        target_id=str(child.pk), target_type="migrations_app.migration"
    ).values_list("event_type", flat=True)
    assert list(events.order_by("id")) == ["migration.requested", "migration.scheduled"]
    # The VM is taken: a migration of its own is refused while the batch waits.
    conflict = api.post(f"/api/vms/{vm.uuid}/migrate/", {"remote_host": "dst"}, format="json")
    assert conflict.status_code == 409

    assert migrations_schedule_run(now=child.not_before - timedelta(seconds=1))["queued"] == []
    done = migrations_schedule_run(now=child.not_before + timedelta(seconds=1))
    assert done["queued"] == [child.pk]
    child.refresh_from_db()
    assert child.status == MigrationStatus.QUEUED


def test_a_batch_whose_window_closes_first_fails_with_the_reason(api, vm):
    body = _batch(api, vm, not_before=_at(3600), window_end=_at(7200)).json()
    child = Migration.objects.get(batch_id=body["id"])
    done = migrations_schedule_run(now=child.window_end + timedelta(seconds=1))
    assert done["window_closed"] == [child.pk]
    child.refresh_from_db()
    assert (child.status, child.failure_reason) == (
        MigrationStatus.FAILED,
        FailureReason.WINDOW_CLOSED,
    )
    batches_advance()
    batch = MigrationBatch.objects.get(pk=body["id"])
    assert batch.status == BatchStatus.FAILED
    finished = AuditEvent.objects.get(event_type="batch.finished", target_id=str(batch.pk))
    assert "window" in str(finished.detail)


def test_a_window_already_over_is_refused_and_nothing_is_created(api, vm):
    response = _batch(api, vm, window_end=_at(-60))
    assert response.status_code == 400
    assert list(response.json()) == ["window_end"]
    assert not MigrationBatch.objects.exists() and not Migration.objects.exists()


def test_a_batch_without_schedule_starts_queued(api, vm):
    body = _batch(api, vm).json()
    assert body["not_before"] is None
    assert Migration.objects.get(batch_id=body["id"]).status == MigrationStatus.QUEUED
