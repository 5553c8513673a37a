"""What users ask of migrations: check, request, cancel, reschedule, tune, post-copy."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import gateway
from hosts.connections import host_connect
from hosts.models import Host, Transport
from hosts.selectors import host_find
from hosts.services import host_validate_new
from migrations_app.domain import decisions
from migrations_app.domain.convergence import Forecast
from migrations_app.domain.lifecycle import Phase
from migrations_app.domain.options import (
    UNLIMITED_MIB_S,
    LiveFrom,
    MigrationOptions,
    live_mode_resolved,
)
from migrations_app.events import migration_publish
from migrations_app.models import ACTIVE_STATUSES, Migration, MigrationBatch, MigrationStatus
from migrations_app.prechecks import (
    CheckResult,
    CheckStatus,
    MigrationPlan,
    checks_skipped,
    run_prechecks,
)
from migrations_app.prechecks.forecast import DirtyRateMeasurement, forecast_of
from migrations_app.scheduling.dispatch import migration_enqueue
from migrations_app.scheduling.schedule import migration_due_queue, schedule_judged, schedule_of
from migrations_app.transitions import migration_audit_detail, migration_change
from vms.models import VM

logger = logging.getLogger(__name__)


DESTINATION_REGISTERED = "destination_registered"


class MigrationConflict(Exception):
    """Another migration of the VM is active, or the action does not fit its state (409)."""


CREDENTIALS_IGNORED_NOTE = gettext_noop(
    "user and password were ignored: a check logs in nowhere and installs no key. "
    "The migration uses them to set up ssh access first, then runs the pre-checks again."
)


@dataclass(frozen=True)
class CheckReport:
    """What `migrate/check` answers: every pre-check, and notes on what was not done."""

    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)
    # Will the copy converge? A warning only: it never makes `ok` false.
    convergence: Forecast | None = None

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        return [self.convergence.message] if self.convergence and self.convergence.warns else []

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "notes": list(self.notes),
            "warnings": self.warnings,
            "convergence": forecast_as_dict(self.convergence),
        }


def forecast_as_dict(found: Forecast | None) -> dict | None:
    if found is None:
        return None
    return {
        "outlook": found.outlook.value,
        "message": found.message,
        "recommended_policy": found.recommended_policy,
        "dirty_rate_bytes_s": found.dirty_rate_bytes_s,
        "rate_bytes_s": found.rate_bytes_s,
        "cap_bytes_s": found.cap_bytes_s,
        "link_bytes_s": found.link_bytes_s,
        "link_basis": found.link_basis.value if found.link_basis else None,
    }


OFFLINE_CHOSEN_NOTE = gettext_noop(
    "live was not given and the VM is shut off: checked as an offline migration (only "
    "its definition moves)."
)


@dataclass(frozen=True)
class RequestedOptions:
    """A request's options for its VM, and why it is live or offline."""

    options: MigrationOptions
    live_from: LiveFrom


def migration_options_for_vm(
    *, vm: VM, options: MigrationOptions, given: frozenset[str]
) -> RequestedOptions:
    """The options as requested for this VM: offline for a shut-off VM unless `live` was
    given; ValidationError on `live` when a live migration is asked of a shut-off VM."""
    resolved, live_from = live_mode_resolved(options=options, given=given, vm_state=vm.state)
    return RequestedOptions(resolved, live_from)


def migration_check(
    *,
    vm: VM,
    remote_host: str,
    options: MigrationOptions,
    credentials_given: bool = False,
    user: str = "",
    dirty_rate_s: int = 0,
    live_from: LiveFrom = LiveFrom.REQUEST,
) -> CheckReport:
    """The pre-checks of a migration as requested, changing nothing; for a live one the
    forecast too: the guest's dirty rate measured over `dirty_rate_s` seconds (while the
    checks run; 0: only a reading cached from the last minute)."""
    notes = [_(CREDENTIALS_IGNORED_NOTE)] if credentials_given else []
    if live_from == LiveFrom.VM_SHUT_OFF:
        notes.append(_(OFFLINE_CHOSEN_NOTE))
    destination = host_find(remote_host=remote_host)
    if destination is None:
        host_validate_new(remote_host=remote_host)
        return CheckReport(checks=_unregistered_destination_checks(remote_host), notes=notes)
    if user and (destination.ssh_access_user != user or not destination.ssh_access_set_up_at):
        reason = _(
            "not checked: ssh access to %(host)s as %(user)s is set up with the "
            "password when the migration is requested, and checked by the worker then"
        ) % {"host": destination.name, "user": user}
        return CheckReport(checks=checks_skipped(reason), notes=notes)
    plan = MigrationPlan.of_request(vm=vm, destination=destination, options=options)
    if not options.live:  # offline: no memory is copied, nothing to converge
        return CheckReport(checks=run_prechecks(plan).results, notes=notes)
    measurement = DirtyRateMeasurement(vm, seconds=dirty_rate_s)
    results = run_prechecks(plan).results
    found = forecast_of(
        reading=measurement.reading(), source=vm.host, destination=destination, options=options
    )
    return CheckReport(checks=results, notes=notes, convergence=found)


def _unregistered_destination_checks(remote_host: str) -> list[CheckResult]:
    registered = CheckResult(
        DESTINATION_REGISTERED,
        CheckStatus.SKIPPED,
        _(
            "%(host)s is not a registered host: the migration registers it "
            "(transport %(transport)s) and checks it before migrating"
        )
        % {"host": remote_host, "transport": Transport.SSH.value},
    )
    reason = _("not checked: the destination is not registered yet")
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
    """Record the request: queued after commit, or `scheduled` for a future `not_before`."""
    if destination.pk == vm.host_id:
        raise ValidationError(
            {"remote_host": [f"{vm.name} is already on {destination.name}: choose another host."]}
        )
    scheduled = schedule_judged(not_before=not_before, window_end=window_end)
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
    """One migration row with its audit events, in the caller's transaction (not enqueued)."""
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                source=vm.host,
                source_was_persistent=vm.persistent,
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
        detail = (
            _("migration %(number)s is %(status)s") % {"number": other.pk, "status": other.status}
            if other
            else _("another migration")
        )
        raise MigrationConflict(
            _("VM %(name)s is already being migrated (%(detail)s).")
            % {"name": vm.name, "detail": detail}
        ) from exc
    audit_event_record(
        actor=actor,
        event_type=EventType.MIGRATION_REQUESTED,
        target=migration,
        after={"status": migration.status},
        detail=migration_audit_detail(migration, **schedule_of(migration)),
    )
    if scheduled:
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_SCHEDULED,
            target=migration,
            after=schedule_of(migration),
            detail=migration_audit_detail(migration),
        )
    migration_publish(migration=migration, event="scheduled" if scheduled else "requested")
    return migration


def migration_cancel(*, migration: Migration, actor: Actor) -> Migration:
    """Take a queued migration out of the queue, or abort a running one."""
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration.pk)
        if not migration.is_active:
            raise MigrationConflict(
                _("Migration %(number)s is already %(status)s.")
                % {"number": migration.pk, "status": migration.status}
            )
        if migration.status in (MigrationStatus.SCHEDULED, MigrationStatus.QUEUED):
            now = timezone.now()
            return migration_change(
                migration,
                MigrationStatus.CANCELLED,
                EventType.MIGRATION_CANCELLED,
                actor=actor,
                error=f"Cancelled by {actor.name} before it started.",
                cancel_requested_at=now,
                finished_at=now,
            )
        if migration.cancel_requested_at is None:
            migration.cancel_requested_at = timezone.now()
            migration.save(update_fields=["cancel_requested_at"])
            audit_event_record(
                actor=actor,
                event_type=EventType.MIGRATION_CANCEL_REQUESTED,
                target=migration,
                detail=migration_audit_detail(migration, status=migration.status),
            )
    if migration.status == MigrationStatus.MIGRATING:
        # The worker also aborts when it sees the request (the job may not have started).
        try:
            with host_connect(migration.source) as conn:
                conn.abort_job(str(migration.vm_uuid))
        except gateway.GatewayError as exc:
            logger.info("abort of migration %s from the API: %s", migration.pk, exc)
    return migration


def migration_schedule_change(
    *, migration: Migration, actor: Actor, changes: dict[str, object]
) -> Migration:
    """Change a scheduled migration's times and/or options; queued at once if due."""
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
                _(
                    "Migration %(number)s is %(status)s: its schedule and options "
                    "can be changed only while it is scheduled."
                )
                % {"number": migration.pk, "status": migration.status}
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
        before = {**schedule_of(migration), "options": current}
        migration.not_before, migration.window_end = not_before, window_end
        for name, value in options.as_model_fields().items():
            setattr(migration, name, value)
        migration.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_RESCHEDULED,
            target=migration,
            before=before,
            after={**schedule_of(migration), "options": options.as_model_fields()},
            detail=migration_audit_detail(migration),
        )
        if decisions.due(not_before=not_before, now=now):
            migration = migration_due_queue(migration, actor=actor)
        else:
            migration_publish(migration=migration, event=EventType.MIGRATION_RESCHEDULED.action)
    return migration


def _running_migration_call(migration: Migration, what: str, call) -> None:
    """`what`: an English msgid (gettext_noop), said in the request's language."""
    if migration.status != MigrationStatus.MIGRATING:
        raise MigrationConflict(
            _("Migration %(number)s is %(status)s: %(what)s needs a running migration.")
            % {"number": migration.pk, "status": migration.status, "what": _(what)}
        )
    try:
        with host_connect(migration.source) as conn:
            call(conn, str(migration.vm_uuid))
    except gateway.GatewayError as exc:
        raise MigrationConflict(
            _("%(what)s failed: %(error)s") % {"what": _(what), "error": exc}
        ) from exc


def migration_tune(
    *,
    migration: Migration,
    actor: Actor,
    max_downtime_ms: int | None = None,
    bandwidth_mib_s: int | None = None,
) -> Migration:
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
            conn.set_max_speed(uuid, bandwidth_mib_s or UNLIMITED_MIB_S)
            read_back["bandwidth_read_mib_s"] = conn.max_speed(uuid)

    _running_migration_call(migration, gettext_noop("tuning"), apply)
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration.pk)
        tuned = ("max_downtime_ms", "bandwidth_mib_s")
        before = {name: getattr(migration, name) for name in tuned}
        given = {"max_downtime_ms": max_downtime_ms, "bandwidth_mib_s": bandwidth_mib_s}
        changes = {name: value for name, value in given.items() if value is not None}
        for name, value in {**changes, **read_back}.items():
            setattr(migration, name, value)
        migration.save(update_fields=[*tuned, *read_back])
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_TUNED,
            target=migration,
            before=before,
            after={name: getattr(migration, name) for name in tuned},
            detail=migration_audit_detail(migration),
        )
        migration_publish(migration=migration, event="tuned")
    return migration


def migration_start_postcopy(*, migration: Migration, actor: Actor) -> Migration:
    """Switch a running migration to post-copy. The record says so before libvirt is
    asked: once switched, the VM's memory is split between the hosts, and a settlement
    that took it for pre-copy would destroy the copy that holds part of it."""
    if not migration.allow_postcopy:
        raise MigrationConflict(
            _(
                "Migration %(number)s was not started with allow_postcopy: "
                "post-copy cannot be switched on now."
            )
            % {"number": migration.pk}
        )
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration.pk)
        if migration.postcopy_started_at:
            raise MigrationConflict(
                _("Migration %(number)s is already in post-copy.") % {"number": migration.pk}
            )
        if migration.status != MigrationStatus.MIGRATING:
            raise MigrationConflict(
                _(
                    "Migration %(number)s is %(status)s: switching to post-copy "
                    "needs a running migration."
                )
                % {"number": migration.pk, "status": migration.status}
            )
        migration.postcopy_started_at = timezone.now()
        migration.save(update_fields=["postcopy_started_at"])
    try:
        _running_migration_call(
            migration, gettext_noop("switching to post-copy"), lambda c, u: c.start_postcopy(u)
        )
    except MigrationConflict as exc:
        if not isinstance(exc.__cause__, gateway.HostUnreachable):
            # libvirt answered and refused: nothing switched. Unanswered, it may have.
            Migration.objects.filter(pk=migration.pk).update(postcopy_started_at=None)
        raise
    with transaction.atomic():
        migration = Migration.objects.select_related("source", "destination").get(pk=migration.pk)
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_POSTCOPY,
            target=migration,
            detail=migration_audit_detail(migration),
        )
        migration_publish(migration=migration, event="postcopy")
    return migration
