"""Scheduled migrations without hypervisors: the request's `not_before` / `window_end`,
the reconciler queueing due ones (with the time fixed or moved in the database), a
window that closes first, cancel and PATCH while scheduled. (With real hosts and
restarted workers: test_schedule_lab.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from migrations_app.domain.lifecycle import FailureReason, MigrationStatus, Phase
from migrations_app.management.commands.reconcile_migrations import Command as ReconcileCommand
from migrations_app.models import Migration
from migrations_app.scheduling.schedule import (
    migrations_schedule_next_event,
    migrations_schedule_run,
)
from migrations_app.worker.runner import migration_execute

pytestmark = pytest.mark.django_db


def _at(seconds: float) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def _migrate(client, vm, **payload):
    return client.post(f"/api/vms/{vm.uuid}/migrate/", {"remote_host": "dst", **payload}, "json")


def _events(migration_id: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            target_id=str(migration_id), target_type="migrations_app.migration"
        )
        .order_by("id")
        .values_list("event_type", flat=True)
    )


# --- the request -----------------------------------------------------------------------


def test_a_future_not_before_records_it_scheduled_and_enqueues_nothing(
    api, vm, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _migrate(api, vm, not_before=_at(3600), window_end=_at(7200))
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["not_before"] and body["window_end"]
    assert len(callbacks) == 1  # the browser is told; no task is handed to the broker
    migration = Migration.objects.get(pk=body["id"])
    assert migration.enqueued_at is None
    assert _events(migration.pk) == ["migration.requested", "migration.scheduled"]
    scheduled = AuditEvent.objects.get(event_type="migration.scheduled")
    assert scheduled.after["not_before"] == migration.not_before.isoformat()
    # Active for the one-migration-per-VM rule (the partial unique index).
    second = _migrate(api, vm)
    assert second.status_code == 409
    assert "is scheduled" in second.json()["detail"]


def test_a_past_not_before_starts_now(api, vm, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _migrate(api, vm, not_before=_at(-60), window_end=_at(600))
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert len(callbacks) == 2  # published and enqueued
    assert Migration.objects.get(pk=response.json()["id"]).enqueued_at is not None


@pytest.mark.parametrize(
    "payload,field,fragment",
    [
        ({"not_before": 3600, "window_end": 1800}, "window_end", "after not_before"),
        ({"not_before": 3600, "window_end": 3600}, "window_end", "after not_before"),
        ({"window_end": -1}, "window_end", "in the future"),
        ({"not_before": -7200, "window_end": -3600}, "window_end", "in the future"),
        ({"not_before": "2026-13-01T00:00:00Z"}, "not_before", "wrong format"),
        ({"not_before": "tomorrow"}, "not_before", "wrong format"),
        ({"not_before": "2030-01-01T10:00:00"}, "not_before", "time zone"),
        ({"window_end": "2030-01-01T10:00:00"}, "window_end", "time zone"),
    ],
)
def test_bad_schedules_are_named(api, vm, payload, field, fragment):
    now = timezone.now()
    values = {
        k: (now + timedelta(seconds=v)).isoformat() if isinstance(v, int) else v
        for k, v in payload.items()
    }
    response = _migrate(api, vm, **values)
    assert response.status_code == 400, response.json()
    assert fragment in " ".join(response.json()[field])
    assert not Migration.objects.exists()


def test_the_schema_documents_the_schedule_and_the_patch(api):
    schema = api.get("/api/schema/?format=json").json()
    request = schema["components"]["schemas"]["MigrateRequest"]["properties"]
    assert request["not_before"]["format"] == "date-time"
    assert "window_closed" in request["window_end"]["description"]
    assert "patch" in schema["paths"]["/api/migrations/{id}/"]
    assert "scheduled" in schema["components"]["schemas"]["MigrationStatusEnum"]["enum"]


# --- the reconciler ----------------------------------------------------------------------


def _scheduled(api, vm, **payload) -> Migration:
    response = _migrate(api, vm, **{"not_before": _at(3600), **payload})
    assert response.status_code == 202, response.json()
    return Migration.objects.get(pk=response.json()["id"])


def test_not_due_yet_stays_scheduled(api, vm):
    migration = _scheduled(api, vm)
    assert migrations_schedule_run() == {"queued": [], "window_closed": []}
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.SCHEDULED
    assert migrations_schedule_next_event() == migration.not_before


def test_due_is_queued_and_enqueued(api, vm, django_capture_on_commit_callbacks):
    migration = _scheduled(api, vm, window_end=_at(7200))
    # Fixed clock: one second after its time.
    with django_capture_on_commit_callbacks(execute=True):
        done = migrations_schedule_run(now=migration.not_before + timedelta(seconds=1))
    assert done == {"queued": [migration.pk], "window_closed": []}
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.QUEUED
    assert migration.enqueued_at is not None
    assert _events(migration.pk)[-1] == "migration.due"
    # A second reconciler finds nothing more to do.
    assert migrations_schedule_run(now=migration.not_before + timedelta(seconds=2)) == {
        "queued": [],
        "window_closed": [],
    }
    # Queued with a window: its window_end is the next event.
    assert migrations_schedule_next_event() == migration.window_end


def test_the_full_reconciler_pass_queues_a_migration_made_due_in_the_database(
    api, vm, django_capture_on_commit_callbacks
):
    from migrations_app.worker.reconciler import migrations_reconcile

    migration = _scheduled(api, vm)
    Migration.objects.filter(pk=migration.pk).update(
        not_before=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        migrations_reconcile()
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.QUEUED
    assert migration.enqueued_at is not None


def test_a_window_that_closes_before_it_is_due_fails_it(api, vm):
    migration = _scheduled(api, vm, window_end=_at(3700))
    done = migrations_schedule_run(now=migration.window_end)
    assert done == {"queued": [], "window_closed": [migration.pk]}
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.FAILED
    assert migration.failure_reason == FailureReason.WINDOW_CLOSED
    assert migration.error == (
        f"the maintenance window closed at {migration.window_end.isoformat()} "
        "before the migration could start"
    )
    assert migration.finished_at is not None
    failed = AuditEvent.objects.get(event_type="migration.failed")
    assert failed.detail["failure_reason"] == "window_closed"
    assert failed.before == {"status": "scheduled"}


def test_a_window_that_closes_while_waiting_for_a_slot_fails_it(api, vm):
    response = _migrate(api, vm, window_end=_at(600))
    migration = Migration.objects.get(pk=response.json()["id"])
    Migration.objects.filter(pk=migration.pk).update(phase=Phase.WAITING_FOR_SLOT)
    assert migrations_schedule_run(now=migration.window_end - timedelta(seconds=1)) == {
        "queued": [],
        "window_closed": [],
    }
    assert migrations_schedule_run(now=migration.window_end + timedelta(seconds=1)) == {
        "queued": [],
        "window_closed": [migration.pk],
    }
    migration.refresh_from_db()
    assert (migration.status, migration.failure_reason) == ("failed", "window_closed")
    # The VM can be migrated again.
    assert _migrate(api, vm).status_code == 202


def test_a_worker_does_not_start_a_migration_whose_window_closed(api, vm):
    """The claim itself refuses it, in case a slot freed before the reconciler looked
    (the hosts are fake addresses: nothing is contacted)."""
    response = _migrate(api, vm, window_end=_at(600))
    past = timezone.now() - timedelta(seconds=1)
    Migration.objects.filter(pk=response.json()["id"]).update(window_end=past)
    assert migration_execute(migration_id=response.json()["id"], worker="w:1") == "failed"
    migration = Migration.objects.get(pk=response.json()["id"])
    assert migration.failure_reason == FailureReason.WINDOW_CLOSED
    assert migration.started_at is None and migration.claim_epoch == 0


def test_a_started_migration_ignores_its_window(api, vm):
    response = _migrate(api, vm, window_end=_at(600))
    Migration.objects.filter(pk=response.json()["id"]).update(
        status=MigrationStatus.MIGRATING, claimed_by="w:1", window_end=timezone.now()
    )
    assert migrations_schedule_run() == {"queued": [], "window_closed": []}
    assert Migration.objects.get(pk=response.json()["id"]).status == MigrationStatus.MIGRATING


def test_the_reconcile_loop_wakes_at_the_next_due_time(api, vm, settings):
    """Between two passes 3 s apart, looking every 2 s, the loop queues a migration due
    in 0.5 s at its time: neither at the next look (1.5 s late) nor at the next pass."""
    settings.MIGRATION_RECONCILE_EVERY_S = 3
    settings.MIGRATION_SCHEDULE_POLL_S = 2
    migration = _scheduled(api, vm)
    due_at = timezone.now() + timedelta(seconds=0.5)
    Migration.objects.filter(pk=migration.pk).update(not_before=due_at)
    ReconcileCommand()._wait_for_next_pass()
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.QUEUED
    queued_at = AuditEvent.objects.get(event_type="migration.due").occurred_at
    delay = (queued_at - due_at).total_seconds()
    print(f"queued {delay:.3f} s after its not_before")
    assert 0 <= delay < 1.0


# --- cancel and change while scheduled ---------------------------------------------------


def test_cancel_while_scheduled(api, vm):
    migration = _scheduled(api, vm)
    response = api.post(f"/api/migrations/{migration.pk}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert "before it started" in response.json()["error"]
    assert _events(migration.pk)[-1] == "migration.cancelled"
    assert migrations_schedule_run(now=migration.not_before) == {"queued": [], "window_closed": []}
    assert _migrate(api, vm).status_code == 202


def test_patch_while_scheduled_changes_the_schedule_and_options(api, vm):
    migration = _scheduled(api, vm, window_end=_at(7200))
    new_start, new_end = _at(1800), _at(5400)
    response = api.patch(
        f"/api/migrations/{migration.pk}/",
        {"not_before": new_start, "window_end": new_end, "max_downtime_ms": 300},
        format="json",
    )
    assert response.status_code == 200, response.json()
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.SCHEDULED
    assert migration.not_before.isoformat() == new_start
    assert migration.window_end.isoformat() == new_end
    assert migration.max_downtime_ms == 300
    event = AuditEvent.objects.get(event_type="migration.rescheduled")
    assert event.before["options"]["max_downtime_ms"] == 500
    assert event.after["options"]["max_downtime_ms"] == 300
    assert event.after["not_before"] == new_start
    # Clear the window end.
    cleared = api.patch(f"/api/migrations/{migration.pk}/", {"window_end": None}, format="json")
    assert cleared.status_code == 200
    assert cleared.json()["window_end"] is None


@pytest.mark.parametrize(
    "payload,field,fragment",
    [
        ({"window_end": -10}, "window_end", "in the future"),
        ({"window_end": 1800}, "window_end", "after not_before"),  # it starts at +3600
        ({"max_downtime_ms": 10}, "max_downtime_ms", "at least 100 ms"),
        ({"live": False, "allow_postcopy": True}, "live", "live migrations only"),
        ({"not_before": "2030-01-01T10:00"}, "not_before", "time zone"),
        ({}, "non_field_errors", "Give not_before"),
    ],
)
def test_bad_patches_are_named_and_change_nothing(api, vm, payload, field, fragment):
    migration = _scheduled(api, vm)
    values = {k: _at(v) if isinstance(v, int) and "window" in k else v for k, v in payload.items()}
    response = api.patch(f"/api/migrations/{migration.pk}/", values, format="json")
    assert response.status_code == 400, response.json()
    assert fragment in " ".join(response.json()[field])
    before = migration.not_before
    migration.refresh_from_db()
    assert (migration.status, migration.not_before, migration.max_downtime_ms) == (
        "scheduled",
        before,
        500,
    )
    assert not AuditEvent.objects.filter(event_type="migration.rescheduled").exists()


def test_patch_to_now_queues_it_at_once(api, vm, django_capture_on_commit_callbacks):
    migration = _scheduled(api, vm)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.patch(f"/api/migrations/{migration.pk}/", {"not_before": None}, "json")
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert Migration.objects.get(pk=migration.pk).enqueued_at is not None
    assert _events(migration.pk)[-2:] == ["migration.rescheduled", "migration.due"]


@pytest.mark.parametrize("status", ["queued", "checking", "migrating", "succeeded"])
def test_patch_once_it_left_scheduled_is_409(api, vm, status):
    migration = _scheduled(api, vm)
    Migration.objects.filter(pk=migration.pk).update(status=status)
    response = api.patch(f"/api/migrations/{migration.pk}/", {"not_before": _at(60)}, "json")
    assert response.status_code == 409
    assert "only while it is scheduled" in response.json()["detail"]


def test_patch_needs_an_administrator(api, viewer_api, vm):
    migration = _scheduled(api, vm)
    response = viewer_api.patch(f"/api/migrations/{migration.pk}/", {"not_before": None}, "json")
    assert response.status_code in (403, 404)
    assert Migration.objects.get(pk=migration.pk).status == "scheduled"


def test_the_list_filters_scheduled_ones(api, vm):
    migration = _scheduled(api, vm)
    listed = api.get("/api/migrations/?status=scheduled").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [row["id"] for row in rows] == [migration.pk]
    other = api.get("/api/migrations/?status=queued").json()
    assert (other["results"] if isinstance(other, dict) else other) == []


# --- the pages ---------------------------------------------------------------------------


def test_the_pages_show_a_scheduled_migration(api, browser, vm):
    migration = _scheduled(api, vm, window_end=_at(7200))
    listed = browser.get("/migrations/?status=scheduled").content.decode()
    assert f'data-migration="{migration.pk}"' in listed
    assert 'class="badge badge-scheduled">Scheduled<' in listed
    assert f"at {migration.not_before:%Y-%m-%d %H:%M:%S}" in listed
    assert '<option value="scheduled"' in listed
    assert 'data-migration="' not in browser.get("/migrations/?status=queued").content.decode()
    detail = browser.get(f"/migrations/{migration.pk}/").content.decode()
    assert 'id="migration-schedule"' in detail
    assert f"window ends {migration.window_end:%Y-%m-%d %H:%M:%S}" in detail


def test_the_migrate_dialog_has_the_schedule_under_the_advanced_options(browser, vm):
    page = browser.get(f"/vms/{vm.uuid}/").content.decode()
    advanced = page[
        page.index('id="mig-advanced"') : page.index("</details>", page.index('id="mig-advanced"'))
    ]
    assert 'name="not_before" type="datetime-local"' in advanced
    assert 'name="window_end" type="datetime-local"' in advanced
    assert 'data-error-for="window_end"' in advanced
