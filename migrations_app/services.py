"""Migration use cases called by the API: request, check, cancel, tune, post-copy."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Min, Q, QuerySet
from django.utils import timezone
from django_q.tasks import async_task

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import gateway
from hosts.connections import host_connect
from hosts.models import Host, Transport
from hosts.selectors import host_find
from hosts.services import host_validate_new
from migrations_app.domain import decisions
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.domain.options import MigrationOptions
from migrations_app.events import migration_publish
from migrations_app.models import (
    ACTIVE_STATUSES,
    RUNNING_STATUSES,
    Migration,
    MigrationBatch,
    MigrationStatus,
)
from migrations_app.prechecks import (
    CheckResult,
    CheckStatus,
    MigrationPlan,
    checks_skipped,
    run_prechecks,
)
from migrations_app.webhooks import webhooks_migration_final
from vms.models import VM

logger = logging.getLogger(__name__)


# The name of the check entry of a destination that is not registered yet.
DESTINATION_REGISTERED = "destination_registered"


class MigrationConflict(Exception):
    """Another migration of the VM is queued or running, or the action does not fit
    the migration's state (HTTP 409)."""


CREDENTIALS_IGNORED_NOTE = (
    "user and password were ignored: a check logs in nowhere and installs no key. "
    "The migration uses them to set up ssh access first, then runs the pre-checks again."
)


@dataclass(frozen=True)
class CheckReport:
    """What `migrate/check` answers: every pre-check, and notes on what was not done."""

    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "notes": list(self.notes),
        }


def migration_check(
    *,
    vm: VM,
    remote_host: str,
    options: MigrationOptions,
    credentials_given: bool = False,
    user: str = "",
) -> CheckReport:
    """The pre-checks of a migration as requested, changing nothing: no host is
    registered, no key installed, no password used, no row or audit event written.

    A registered destination is checked over the connection it has now. One that is
    not registered yet is not contacted: the report says the migration will register
    it (transport ssh) and the worker's pre-checks will check it then. Raises django
    ValidationError (on `remote_host`) for a value the migration could not register.
    """
    notes = [CREDENTIALS_IGNORED_NOTE] if credentials_given else []
    destination = host_find(remote_host=remote_host)
    if destination is None:
        host_validate_new(remote_host=remote_host)
        return CheckReport(checks=_unregistered_destination_checks(remote_host), notes=notes)
    if user and (destination.ssh_access_user != user or not destination.ssh_access_set_up_at):
        # The migration sets up access for `user` with the password first; without that
        # access the destination cannot be checked now (and the password is not used).
        reason = (
            f"not checked: ssh access to {destination.name} as {user} is set up with the "
            "password when the migration is requested, and checked by the worker then"
        )
        return CheckReport(checks=checks_skipped(reason), notes=notes)
    plan = MigrationPlan.of_request(vm=vm, destination=destination, options=options)
    return CheckReport(checks=run_prechecks(plan).results, notes=notes)


def _unregistered_destination_checks(remote_host: str) -> list[CheckResult]:
    registered = CheckResult(
        DESTINATION_REGISTERED,
        CheckStatus.SKIPPED,
        f"{remote_host} is not a registered host: the migration registers it "
        f"(transport {Transport.SSH.value}) and checks it before migrating",
    )
    reason = "not checked: the destination is not registered yet"
    return [registered, *checks_skipped(reason)]


def migration_request(
    *,
    vm: VM,
    destination: Host,
    options: MigrationOptions,
    actor: Actor,
    not_before: datetime | None = None,
    window_end: datetime | None = None,
) -> Migration:
    """Record the request and queue it for a worker (after commit); with a
    `not_before` in the future, record it `scheduled` instead: the reconciler queues it
    when it is due (nothing waits in memory). A `window_end` fails it (window_closed)
    if it has not started by then.

    Raises ValidationError (on `window_end`) for a window that is over or ends before
    it starts, and MigrationConflict if the VM already has an active migration; the
    database's partial unique index decides races between simultaneous requests.
    """
    now = timezone.now()
    errors = decisions.schedule_errors(not_before=not_before, window_end=window_end, now=now)
    if errors:
        raise ValidationError(errors)
    scheduled = not decisions.due(not_before=not_before, now=now)
    with transaction.atomic():
        migration = migration_row_record(
            vm=vm,
            destination=destination,
            options=options,
            actor=actor,
            scheduled=scheduled,
            not_before=not_before,
            window_end=window_end,
        )
        if not scheduled:
            transaction.on_commit(lambda: migration_enqueue(migration_id=migration.pk))
    return migration


def migration_row_record(
    *,
    vm: VM,
    destination: Host,
    options: MigrationOptions,
    actor: Actor,
    scheduled: bool,
    not_before: datetime | None,
    window_end: datetime | None,
    batch: MigrationBatch | None = None,
) -> Migration:
    """One migration row (`scheduled` or `queued`) with its audit events and the
    browsers' notice, inside the caller's transaction; the single request and every
    batch child go through here. Enqueuing is the caller's (a batch child waits for its
    batch's turn).

    Raises MigrationConflict if the VM already has an active migration: the database's
    partial unique index decides races between simultaneous requests.
    """
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                source=vm.host,
                destination=destination,
                requested_by=actor.user,
                requested_by_name=actor.name,
                batch=batch,
                **({"phase": Phase.WAITING_FOR_BATCH} if batch else {}),
                status=MigrationStatus.SCHEDULED if scheduled else MigrationStatus.QUEUED,
                not_before=not_before,
                window_end=window_end,
                **options.as_model_fields(),
            )
    except IntegrityError as exc:
        other = Migration.objects.filter(vm_uuid=vm.uuid, status__in=ACTIVE_STATUSES).first()
        detail = f"migration {other.pk} is {other.status}" if other else "another migration"
        raise MigrationConflict(f"VM {vm.name} is already being migrated ({detail}).") from exc
    in_batch = {"batch": batch.pk} if batch else {}
    audit_event_record(
        actor=actor,
        event_type=EventType.MIGRATION_REQUESTED,
        target=migration,
        after={"status": migration.status},
        detail=_audit_detail(migration, **_schedule_of(migration), **in_batch),
    )
    if scheduled:
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_SCHEDULED,
            target=migration,
            after=_schedule_of(migration),
            detail=_audit_detail(migration, **in_batch),
        )
    migration_publish(migration=migration, event="scheduled" if scheduled else "requested")
    return migration


def _schedule_of(migration: Migration) -> dict:
    return {
        "not_before": migration.not_before.isoformat() if migration.not_before else None,
        "window_end": migration.window_end.isoformat() if migration.window_end else None,
    }


def migration_enqueue(*, migration_id: int) -> bool:
    """Hand the migration's task to the broker; True if it took it.

    A broker that is down loses nothing: the migration stays queued with no
    `enqueued_at`, and the reconciler enqueues it again once the broker is back.
    """
    try:
        async_task(
            "migrations_app.tasks.migration_run",
            migration_id,
            task_name=f"migration-{migration_id}",
            # Never retried: a redelivered migration is refused by the claim in the engine.
            q_options={"max_attempts": 1},
        )
    except Exception as exc:  # redis down: the reconciler enqueues it later
        logger.warning("migration %s: could not be enqueued now: %s", migration_id, exc)
        return False
    Migration.objects.filter(pk=migration_id).update(enqueued_at=timezone.now())
    return True


def migrations_dispatch_waiting(*, include_lost: bool = False) -> list[int]:
    """Enqueue queued migrations that may start now; returns their ids.

    Called when a migration ends (its slots free up) and by the reconciler, which also
    enqueues migrations whose task was lost (`include_lost`). Enqueuing twice is safe:
    a second task finds the migration claimed (or still without a slot) and returns.
    """
    from migrations_app.batch_services import batches_advance

    now = timezone.now()
    # Batches first: they may stop or finish, and only some of their children may start.
    batch_startable = batches_advance()
    queued = list(
        Migration.objects.filter(status=MigrationStatus.QUEUED).order_by("created_at", "pk")
    )
    if not queued:
        return []
    running = Migration.objects.filter(status__in=RUNNING_STATUSES)
    outgoing = Counter(running.values_list("source_id", flat=True))
    incoming = Counter(running.values_list("destination_id", flat=True))
    dispatched = []
    for migration in queued:
        age = (now - migration.enqueued_at).total_seconds() if migration.enqueued_at else None
        lost = include_lost and decisions.task_lost(
            enqueued_age_s=age, lost_after_s=settings.MIGRATION_TASK_LOST_AFTER_S
        )
        # A request's own enqueue runs right after its commit: not lost yet.
        if age is None and (now - migration.created_at).total_seconds() < 5:
            lost = False
        waiting = migration.phase == Phase.WAITING_FOR_SLOT
        if migration.batch_id is not None:
            # A batch's child goes to a worker only in its turn (batch_services);
            # waiting for the batch, it is not in the broker (enqueued_at None).
            if migration.pk not in batch_startable:
                continue
            if migration.phase == Phase.WAITING_FOR_BATCH and migration.enqueued_at is None:
                waiting = True
        if not (lost or waiting):
            continue
        free = decisions.slot_free(
            outgoing=outgoing[migration.source_id],
            incoming=incoming[migration.destination_id],
            max_outgoing=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
            max_incoming=settings.MIGRATION_MAX_INCOMING_PER_HOST,
        )
        if waiting and not free and not lost:
            continue
        if migration_enqueue(migration_id=migration.pk):
            dispatched.append(migration.pk)
            if free:  # it will probably take the slot: count it for the next ones
                outgoing[migration.source_id] += 1
                incoming[migration.destination_id] += 1
    return dispatched


def _audit_detail(migration: Migration, **extra) -> dict:
    return {
        "vm_uuid": str(migration.vm_uuid),
        "vm_name": migration.vm_name,
        "source": migration.source.name,
        "destination": migration.destination.name,
        "options": MigrationOptions.from_migration(migration).as_model_fields(),
        **extra,
    }


def migration_cancel(*, migration: Migration, actor: Actor) -> Migration:
    """Take a queued migration out of the queue, or abort a running one."""
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration.pk)
        if not migration.is_active:
            raise MigrationConflict(f"Migration {migration.pk} is already {migration.status}.")
        if migration.status in (MigrationStatus.SCHEDULED, MigrationStatus.QUEUED):
            before = migration.status
            migration.status = MigrationStatus.CANCELLED
            migration.finished_at = timezone.now()
            migration.error = f"Cancelled by {actor.name} before it started."
            migration.cancel_requested_at = migration.finished_at
            migration.save()
            audit_event_record(
                actor=actor,
                event_type=EventType.MIGRATION_CANCELLED,
                target=migration,
                before={"status": before},
                after={"status": migration.status},
                detail=_audit_detail(migration),
            )
            webhooks_migration_final(migration=migration)
            migration_publish(migration=migration, event="cancelled")
            return migration
        if migration.cancel_requested_at is None:
            migration.cancel_requested_at = timezone.now()
            migration.save(update_fields=["cancel_requested_at"])
            audit_event_record(
                actor=actor,
                event_type=EventType.MIGRATION_CANCEL_REQUESTED,
                target=migration,
                detail=_audit_detail(migration, status=migration.status),
            )
    if migration.status == MigrationStatus.MIGRATING:
        # Abort at once; the worker also aborts when it sees the request (e.g. if the
        # libvirt job had not started yet) and records the outcome.
        try:
            with host_connect(migration.source) as conn:
                conn.abort_job(str(migration.vm_uuid))
        except gateway.GatewayError as exc:
            logger.info("abort of migration %s from the API: %s", migration.pk, exc)
    return migration


# --- scheduled migrations -------------------------------------------------------------


def window_closed_message(window_end: datetime) -> str:
    return (
        f"the maintenance window closed at {window_end.isoformat()} "
        "before the migration could start"
    )


def migration_schedule_change(
    *, migration: Migration, actor: Actor, changes: dict[str, object]
) -> Migration:
    """Change a scheduled migration's `not_before`, `window_end` and/or options
    (`changes`: only the keys given; a None time clears it). Queued at once if it is
    due now. Raises MigrationConflict (409) unless it is still scheduled, and
    ValidationError (400 on the field) for a schedule or options that are refused."""
    changes = dict(changes)
    schedule = {key: changes.pop(key) for key in ("not_before", "window_end") if key in changes}
    with transaction.atomic():
        migration = (
            Migration.objects.select_for_update()
            .select_related("source", "destination")
            .get(pk=migration.pk)
        )
        if migration.status != MigrationStatus.SCHEDULED:
            raise MigrationConflict(
                f"Migration {migration.pk} is {migration.status}: its schedule and options "
                "can be changed only while it is scheduled."
            )
        now = timezone.now()
        not_before = schedule.get("not_before", migration.not_before)
        window_end = schedule.get("window_end", migration.window_end)
        errors = decisions.schedule_errors(not_before=not_before, window_end=window_end, now=now)
        current = MigrationOptions.from_migration(migration).as_model_fields()
        options = MigrationOptions(**{**current, **changes}, validate=False)
        errors.update(options.errors())
        if errors:
            raise ValidationError(errors)
        before = {**_schedule_of(migration), "options": current}
        migration.not_before, migration.window_end = not_before, window_end
        for name, value in options.as_model_fields().items():
            setattr(migration, name, value)
        migration.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_RESCHEDULED,
            target=migration,
            before=before,
            after={**_schedule_of(migration), "options": options.as_model_fields()},
            detail=_audit_detail(migration),
        )
        if decisions.due(not_before=not_before, now=now):
            migration = _scheduled_queue(migration, actor=actor)
        else:
            migration_publish(migration=migration, event=EventType.MIGRATION_RESCHEDULED.action)
    return migration


def _scheduled_queue(migration: Migration, *, actor: Actor) -> Migration:
    """scheduled -> queued (the row is locked by the caller) and enqueued after commit."""
    migration.status = MigrationStatus.QUEUED
    migration.save(update_fields=["status"])
    audit_event_record(
        actor=actor,
        event_type=EventType.MIGRATION_DUE,
        target=migration,
        before={"status": MigrationStatus.SCHEDULED},
        after={"status": migration.status},
        detail=_audit_detail(migration, **_schedule_of(migration)),
    )
    migration_publish(migration=migration, event=EventType.MIGRATION_DUE.action)
    transaction.on_commit(lambda: migration_enqueue(migration_id=migration.pk))
    return migration


def migration_window_close(*, migration: Migration, actor: Actor, now: datetime) -> Migration:
    """Record a migration that did not start before its window closed as failed
    (window_closed). The caller holds the row's lock and has checked that it is
    scheduled or queued and unclaimed: nothing ran, no host is touched."""
    before = migration.status
    migration.status = MigrationStatus.FAILED
    migration.failure_reason = FailureReason.WINDOW_CLOSED
    migration.error = window_closed_message(migration.window_end)
    migration.phase = Phase.FAILED
    migration.finished_at = now
    migration.save()
    audit_event_record(
        actor=actor,
        event_type=EventType.MIGRATION_FAILED,
        target=migration,
        before={"status": before},
        after={"status": migration.status},
        detail=_audit_detail(
            migration,
            error=migration.error,
            failure_reason=migration.failure_reason,
            **_schedule_of(migration),
        ),
    )
    webhooks_migration_final(migration=migration)
    migration_publish(migration=migration, event=EventType.MIGRATION_FAILED.action)
    return migration


def _schedule_pending() -> QuerySet[Migration]:
    """The migrations a schedule event may concern: scheduled ones, and queued ones
    with a window that no worker has claimed yet."""
    return Migration.objects.filter(
        Q(status=MigrationStatus.SCHEDULED)
        | Q(status=MigrationStatus.QUEUED, window_end__isnull=False, claimed_by="")
    )


def migrations_schedule_next_event() -> datetime | None:
    """The next time a schedule needs the reconciler: the earliest `not_before` of a
    scheduled migration or `window_end` of one still waiting (None: none)."""
    pending = _schedule_pending()
    times = [
        pending.filter(status=MigrationStatus.SCHEDULED).aggregate(t=Min("not_before"))["t"],
        pending.aggregate(t=Min("window_end"))["t"],
    ]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def migrations_schedule_run(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Queue the scheduled migrations that are due and fail the waiting ones whose
    window closed; returns their ids ({"queued": [...], "window_closed": [...]}).

    Each change is a compare-and-set under the row's lock, so several reconcilers
    (or a claim racing with one) change a migration once.
    """
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
                _scheduled_queue(migration, actor=actor)
                done["queued"].append(pk)
    return done


def _running_migration_call(migration: Migration, what: str, call) -> None:
    if migration.status != MigrationStatus.MIGRATING:
        raise MigrationConflict(
            f"Migration {migration.pk} is {migration.status}: {what} needs a running migration."
        )
    try:
        with host_connect(migration.source) as conn:
            call(conn, str(migration.vm_uuid))
    except gateway.GatewayError as exc:
        raise MigrationConflict(f"{what} failed: {exc}") from exc


def migration_tune(
    *,
    migration: Migration,
    actor: Actor,
    max_downtime_ms: int | None = None,
    bandwidth_mib_s: int | None = None,
) -> Migration:
    """Change max downtime and/or bandwidth of a running migration.

    Raises ValidationError (before the host is asked) if a new value breaks its rule."""
    MigrationOptions.from_migration(migration).tuned(
        max_downtime_ms=max_downtime_ms, bandwidth_mib_s=bandwidth_mib_s
    )

    read_back: dict[str, int] = {}

    def apply(conn: gateway.HostConnection, uuid: str) -> None:
        if max_downtime_ms is not None:
            conn.set_max_downtime(uuid, max_downtime_ms)
            read_back["max_downtime_read_ms"] = conn.max_downtime(uuid)
        if bandwidth_mib_s is not None:
            # libvirt reads 0 as "unlimited" only for new jobs; a huge cap is the same.
            conn.set_max_speed(uuid, bandwidth_mib_s or 8_388_607)

    _running_migration_call(migration, "tuning", apply)
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration.pk)
        before = {
            "max_downtime_ms": migration.max_downtime_ms,
            "bandwidth_mib_s": migration.bandwidth_mib_s,
        }
        if max_downtime_ms is not None:
            migration.max_downtime_ms = max_downtime_ms
        if bandwidth_mib_s is not None:
            migration.bandwidth_mib_s = bandwidth_mib_s
        for name, value in read_back.items():
            setattr(migration, name, value)
        migration.save(update_fields=["max_downtime_ms", "bandwidth_mib_s", *read_back])
        after = {
            "max_downtime_ms": migration.max_downtime_ms,
            "bandwidth_mib_s": migration.bandwidth_mib_s,
        }
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_TUNED,
            target=migration,
            before=before,
            after=after,
            detail=_audit_detail(migration),
        )
        migration_publish(migration=migration, event="tuned")
    return migration


def migration_start_postcopy(*, migration: Migration, actor: Actor) -> Migration:
    if not migration.allow_postcopy:
        raise MigrationConflict(
            f"Migration {migration.pk} was not started with allow_postcopy: "
            "post-copy cannot be switched on now."
        )
    if migration.postcopy_started_at:
        raise MigrationConflict(f"Migration {migration.pk} is already in post-copy.")
    _running_migration_call(migration, "switching to post-copy", lambda c, u: c.start_postcopy(u))
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration.pk)
        migration.postcopy_started_at = timezone.now()
        migration.save(update_fields=["postcopy_started_at"])
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_POSTCOPY,
            target=migration,
            detail=_audit_detail(migration),
        )
        migration_publish(migration=migration, event="postcopy")
    return migration
