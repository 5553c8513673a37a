"""Scheduled migrations: queued when due, failed when their window closes unstarted."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor
from migrations_app.domain import decisions
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.models import Migration, MigrationStatus
from migrations_app.scheduling.dispatch import migration_enqueue
from migrations_app.transitions import migration_change


def schedule_of(migration: Migration) -> dict:
    times = {"not_before": migration.not_before, "window_end": migration.window_end}
    return {name: at.isoformat() if at else None for name, at in times.items()}


def schedule_judged(*, not_before: datetime | None, window_end: datetime | None) -> bool:
    """True if a request with these times waits as `scheduled` (False: it starts now).
    Raises ValidationError on the field for a window that is over or ends before it starts."""
    now = timezone.now()
    errors = decisions.schedule_errors(not_before=not_before, window_end=window_end, now=now)
    if errors:
        raise ValidationError(errors)
    return not decisions.due(not_before=not_before, now=now)


def window_closed_message(window_end: datetime) -> str:
    at = window_end.isoformat()
    return f"the maintenance window closed at {at} before the migration could start"


def migration_due_queue(migration: Migration, *, actor: Actor) -> Migration:
    """scheduled -> queued, enqueued after commit."""
    migration = migration_change(
        migration,
        MigrationStatus.QUEUED,
        EventType.MIGRATION_DUE,
        actor=actor,
        detail=schedule_of(migration),
    )
    transaction.on_commit(lambda: migration_enqueue(migration_id=migration.pk))
    return migration


def migration_window_close(*, migration: Migration, actor: Actor, now: datetime) -> Migration:
    """Fail a migration whose window closed before it started (the caller locked it)."""
    return migration_change(
        migration,
        MigrationStatus.FAILED,
        EventType.MIGRATION_FAILED,
        actor=actor,
        detail=schedule_of(migration),
        failure_reason=FailureReason.WINDOW_CLOSED,
        error=window_closed_message(migration.window_end),
        phase=Phase.FAILED,
        finished_at=now,
    )


def _schedule_pending() -> QuerySet[Migration]:
    """Scheduled migrations, and unclaimed queued ones with a window."""
    return Migration.objects.filter(
        Q(status=MigrationStatus.SCHEDULED)
        | Q(status=MigrationStatus.QUEUED, window_end__isnull=False, claimed_by="")
    )


def migrations_schedule_next_event() -> datetime | None:
    """The earliest `not_before` or `window_end` still pending (None: none)."""
    pending = _schedule_pending()
    times = [
        pending.filter(status=MigrationStatus.SCHEDULED).aggregate(t=Min("not_before"))["t"],
        pending.aggregate(t=Min("window_end"))["t"],
    ]
    return min((t for t in times if t is not None), default=None)


def migrations_schedule_run(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Queue the due migrations and fail the ones whose window closed; returns their ids."""
    actor = Actor.system("scheduler")
    done: dict[str, list[int]] = {"queued": [], "window_closed": []}
    for pk in list(_schedule_pending().order_by("not_before", "pk").values_list("pk", flat=True)):
        with transaction.atomic():
            migration = (
                _schedule_pending()
                .select_for_update(of=("self",))
                .select_related("source", "destination")
                .filter(pk=pk)
                .first()
            )
            if migration is None:
                continue  # started, cancelled or changed meanwhile
            at = now or timezone.now()
            if decisions.window_closed(window_end=migration.window_end, now=at):
                migration_window_close(migration=migration, actor=actor, now=at)
                done["window_closed"].append(pk)
            elif migration.status == MigrationStatus.SCHEDULED and decisions.due(
                not_before=migration.not_before, now=at
            ):
                migration_due_queue(migration, actor=actor)
                done["queued"].append(pk)
    return done
