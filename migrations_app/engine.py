"""The migration engine: runs one migration in a worker, from claim to outcome.

claim (when the hosts have a free slot) -> pre-checks -> libvirt migrateToURI3 in a
thread while this thread samples the job -> record the outcome. Any failure is
settled from what libvirt says: the VM must end up running on exactly one host.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import Actor, audit_event_record
from hosts import gateway
from hosts.models import Host
from migrations_app.checks import MigrationPlan, run_prechecks
from migrations_app.events import migration_publish
from migrations_app.models import (
    RUNNING_STATUSES,
    Migration,
    MigrationSample,
    MigrationStatus,
    StorageMode,
    TransportMode,
)
from migrations_app.progress import ProgressSample, sample_from_job_stats
from vms.services import host_refresh_with_vms as host_refresh

logger = logging.getLogger(__name__)

SLOT_POLL_S = 1.0


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _actor() -> Actor:
    return Actor.system(f"worker {worker_identity()}")


def _audit(migration: Migration, event: str, *, before: str | None = None, **detail) -> None:
    audit_event_record(
        actor=_actor(),
        event_type=f"migration.{event}",
        target=migration,
        before={"status": before} if before else None,
        after={"status": migration.status},
        detail={
            "vm_uuid": str(migration.vm_uuid),
            "vm_name": migration.vm_name,
            "source": migration.source.name,
            "destination": migration.destination.name,
            **detail,
        },
    )


def _transition(migration: Migration, status: str, event: str, **fields) -> Migration:
    """Change status (and fields) with its audit row in one transaction; publish after."""
    with transaction.atomic():
        current = Migration.objects.select_for_update().get(pk=migration.pk)
        before = current.status
        current.status = status
        current.heartbeat_at = timezone.now()
        for key, value in fields.items():
            setattr(current, key, value)
        if status in (
            MigrationStatus.SUCCEEDED,
            MigrationStatus.FAILED,
            MigrationStatus.CANCELLED,
        ):
            current.finished_at = timezone.now()
        current.save()
        _audit(current, event, before=before, error=current.error or None)
        migration_publish(migration=current, event=event)
    return current


# --- claim ---------------------------------------------------------------------------


def _try_claim(migration_id: int, worker: str) -> tuple[str, Migration | None]:
    """('claimed', m) | ('wait', None) | ('not-mine', None)."""
    with transaction.atomic():
        migration = Migration.objects.select_for_update().get(pk=migration_id)
        if migration.status != MigrationStatus.QUEUED or migration.claimed_by:
            return "not-mine", None  # cancelled, or a redelivery of a claimed task
        # Lock both hosts so that concurrent claims count each other's slots.
        list(
            Host.objects.select_for_update()
            .filter(pk__in=[migration.source_id, migration.destination_id])
            .order_by("pk")
        )
        running = Migration.objects.filter(status__in=RUNNING_STATUSES)
        outgoing = running.filter(source_id=migration.source_id).count()
        incoming = running.filter(destination_id=migration.destination_id).count()
        if (
            outgoing >= settings.MIGRATION_MAX_OUTGOING_PER_HOST
            or incoming >= settings.MIGRATION_MAX_INCOMING_PER_HOST
        ):
            return "wait", None
        migration.status = MigrationStatus.CHECKING
        migration.claimed_by = worker
        migration.started_at = migration.heartbeat_at = timezone.now()
        migration.phase = "checking"
        migration.save()
        _audit(migration, "checking", before=MigrationStatus.QUEUED, worker=worker)
        migration_publish(migration=migration, event="checking")
    return "claimed", migration


def _claim_when_slot_free(migration_id: int, worker: str) -> Migration | None:
    waited = False
    while True:
        outcome, migration = _try_claim(migration_id, worker)
        if outcome == "claimed":
            return migration
        if outcome == "not-mine":
            logger.info("migration %s: not claimable (already claimed or finished)", migration_id)
            return None
        if not waited:
            logger.info("migration %s waits for a free slot on its hosts", migration_id)
            waited = True
        time.sleep(SLOT_POLL_S)


# --- run -----------------------------------------------------------------------------


def migration_spec(migration: Migration) -> gateway.MigrationSpec:
    return gateway.MigrationSpec(
        live=migration.live,
        undefine_source=migration.delete_source,
        copy_storage=migration.storage == StorageMode.COPY,
        tunnelled=migration.transport == TransportMode.TUNNELLED,
        auto_converge=migration.auto_converge,
        allow_postcopy=migration.allow_postcopy,
        compressed=migration.compressed,
        parallel_connections=migration.parallel_connections,
        bandwidth_mib_s=migration.bandwidth_mib_s,
        destination_name=migration.new_name,
    )


def migration_execute(*, migration_id: int, worker: str | None = None) -> str:
    """Run migration `migration_id` to its end; returns the final status."""
    worker = worker or worker_identity()
    migration = _claim_when_slot_free(migration_id, worker)
    if migration is None:
        return Migration.objects.get(pk=migration_id).status

    plan = MigrationPlan(
        vm_uuid=str(migration.vm_uuid),
        vm_name=migration.vm_name,
        source=migration.source,
        destination=migration.destination,
        live=migration.live,
        storage=migration.storage,
        new_name=migration.new_name,
        migration_id=migration.pk,
    )
    checks = run_prechecks(plan)
    failed = [c for c in checks if c.failed]
    check_rows = [c.as_dict() for c in checks]
    if failed:
        reasons = "; ".join(f"{c.name}: {c.message}" for c in failed)
        return _transition(
            migration,
            MigrationStatus.FAILED,
            "failed",
            checks=check_rows,
            phase="checks_failed",
            error=f"Pre-checks failed: {reasons}",
        ).status
    if Migration.objects.filter(pk=migration.pk, cancel_requested_at__isnull=False).exists():
        return _transition(
            migration,
            MigrationStatus.CANCELLED,
            "cancelled",
            checks=check_rows,
            error="Cancelled before libvirt started the migration.",
        ).status

    migration = _transition(
        migration, MigrationStatus.MIGRATING, "started", checks=check_rows, phase="setup"
    )
    error = _migrate_and_monitor(migration)
    if error is None:
        return _complete(migration).status
    return _settle_failure(migration, error).status


def _migrate_and_monitor(migration: Migration) -> str | None:
    """Run libvirt's migration in a thread and sample it; returns libvirt's error or None."""
    uuid = str(migration.vm_uuid)
    source_uri = migration.source.connection_uri
    timeout = settings.LIBVIRT_CONNECT_TIMEOUT_S
    outcome: dict[str, str] = {}

    def run() -> None:
        try:
            with gateway.connect(source_uri, timeout=timeout) as conn:
                conn.migrate(
                    uuid,
                    destination_uri=migration.destination.connection_uri,
                    spec=migration_spec(migration),
                )
        except gateway.GatewayError as exc:
            outcome["error"] = str(exc)
        except Exception as exc:  # never leave the monitor waiting on a dead thread
            logger.exception("migration %s: unexpected error", migration.pk)
            outcome["error"] = f"unexpected error: {exc}"

    runner = threading.Thread(target=run, name=f"migration-{migration.pk}", daemon=True)
    started = time.monotonic()
    runner.start()
    abort_reason = None
    try:
        with gateway.connect(source_uri, timeout=timeout) as monitor:
            abort_reason = _monitor(migration, runner, monitor, started)
    except gateway.GatewayError as exc:
        # Without a monitor connection the migration still runs; wait for its end.
        logger.warning("migration %s: monitoring connection failed: %s", migration.pk, exc)
    while runner.is_alive():
        runner.join(1.0)
        _heartbeat(migration)
    if "error" in outcome and abort_reason:
        return f"{abort_reason}: {outcome['error']}"
    return outcome.get("error")


def _monitor(
    migration: Migration,
    runner: threading.Thread,
    monitor: gateway.HostConnection,
    started: float,
) -> str | None:
    """Sample the job until the runner ends; returns why the portal aborted it, if it did."""
    uuid = str(migration.vm_uuid)
    interval = settings.MIGRATION_SAMPLE_INTERVAL_S
    percent = 0.0
    downtime_applied = False
    abort_reason: str | None = None
    last_heartbeat = 0.0
    next_tick = time.monotonic()
    while True:
        # A fixed cadence: the time a sample takes is not added to the interval.
        next_tick += interval
        runner.join(max(0.0, next_tick - time.monotonic()))
        if not runner.is_alive():
            return abort_reason
        control = Migration.objects.values("cancel_requested_at", "postcopy_started_at").get(
            pk=migration.pk
        )
        reason = None
        if control["cancel_requested_at"]:
            reason = "cancelled on request"
        elif time.monotonic() - started > migration.timeout_s:
            reason = f"timed out after {migration.timeout_s} s"
        if reason and abort_reason is None:
            try:
                monitor.abort_job(uuid)
                abort_reason = reason
            except gateway.GatewayError as exc:
                logger.info("migration %s: abort not possible yet: %s", migration.pk, exc)
        try:
            stats = monitor.job_stats(uuid)
        except gateway.GatewayError:
            stats = {}  # the domain left the source at the very end, or a blip
        if stats and not downtime_applied and migration.live:
            try:
                monitor.set_max_downtime(uuid, migration.max_downtime_ms)
                downtime_applied = True
            except gateway.GatewayError as exc:
                logger.info("migration %s: max downtime not set yet: %s", migration.pk, exc)
        if stats:
            sample = sample_from_job_stats(
                stats,
                previous_percent=percent,
                postcopy=bool(control["postcopy_started_at"]),
            )
            percent = sample.percent
            _record_sample(migration, sample)
            last_heartbeat = time.monotonic()
        elif time.monotonic() - last_heartbeat > 1.0:
            _heartbeat(migration)
            last_heartbeat = time.monotonic()


def _heartbeat(migration: Migration) -> None:
    Migration.objects.filter(pk=migration.pk).update(heartbeat_at=timezone.now())


def _record_sample(migration: Migration, sample: ProgressSample) -> None:
    now = timezone.now()
    values = asdict(sample)
    elapsed_ms = values.pop("elapsed_ms")
    eta_s = values.pop("eta_s")
    with transaction.atomic():
        MigrationSample.objects.create(
            migration_id=migration.pk, taken_at=now, elapsed_ms=elapsed_ms, **values
        )
        Migration.objects.filter(pk=migration.pk).update(
            progress_updated_at=now, heartbeat_at=now, eta_s=eta_s, **values
        )
        current = Migration.objects.select_related("source", "destination").get(pk=migration.pk)
        migration_publish(
            migration=current,
            event="progress",
            sample={"taken_at": now.isoformat(), "elapsed_ms": elapsed_ms, **asdict(sample)},
        )


# --- outcomes ------------------------------------------------------------------------


def _complete(migration: Migration) -> Migration:
    migration = _transition(migration, MigrationStatus.COMPLETING, "completing", phase="completing")
    uuid = str(migration.vm_uuid)
    stats: dict = {}
    try:
        with gateway.connect(
            migration.destination.connection_uri, timeout=settings.LIBVIRT_CONNECT_TIMEOUT_S
        ) as conn:
            stats = conn.completed_job_stats(uuid)
    except gateway.GatewayError as exc:
        logger.warning("migration %s: no completed statistics: %s", migration.pk, exc)
    _refresh_inventory(migration)
    _record_final_sample(migration, stats)
    return _transition(
        migration,
        MigrationStatus.SUCCEEDED,
        "succeeded",
        phase="done",
        percent=100.0,
        eta_s=0,
        data_remaining_bytes=0 if migration.data_remaining_bytes is not None else None,
        **_completed_fields(stats),
    )


def _record_final_sample(migration: Migration, stats: dict) -> None:
    """The last sample: everything sent, as libvirt's completed statistics say."""
    MigrationSample.objects.create(
        migration_id=migration.pk,
        taken_at=timezone.now(),
        elapsed_ms=int(stats.get("time_elapsed") or 0),
        phase="done",
        percent=100.0,
        data_total_bytes=stats.get("data_total"),
        data_processed_bytes=stats.get("data_processed"),
        data_remaining_bytes=stats.get("data_remaining", 0),
        memory_dirty_rate_bytes_s=None,
        memory_iteration=stats.get("memory_iteration"),
        throughput_bytes_s=stats.get("memory_bps"),
    )


def _completed_fields(stats: dict) -> dict:
    if not stats:
        return {}
    return {
        "completed_stats": stats,
        "total_time_ms": stats.get("time_elapsed"),
        "downtime_ms": stats.get("downtime"),
        "setup_time_ms": stats.get("setup_time"),
        "transferred_bytes": stats.get("data_processed"),
    }


def _refresh_inventory(migration: Migration) -> None:
    actor = _actor()
    for host in (migration.source, migration.destination):
        host_refresh(host=host, actor=actor)


def _find(uri: str, uuid: str) -> tuple[gateway.DomainInfo | None, str | None]:
    """(domain or None, error if the host could not be asked)."""
    try:
        with gateway.connect(uri, timeout=settings.LIBVIRT_CONNECT_TIMEOUT_S) as conn:
            return conn.find_domain(uuid=uuid), None
    except gateway.GatewayError as exc:
        return None, str(exc)


def _with_host(uri: str, action) -> str | None:
    try:
        with gateway.connect(uri, timeout=settings.LIBVIRT_CONNECT_TIMEOUT_S) as conn:
            action(conn)
        return None
    except gateway.GatewayError as exc:
        return str(exc)


ACTIVE = {"running", "paused", "blocked", "shutting_down"}


def _remove_domain(conn: gateway.HostConnection, uuid: str) -> None:
    """Stop and undefine what a failed migration left on a destination, if anything."""
    domain = conn.find_domain(uuid=uuid)
    if domain is None:
        return
    if domain.state in ACTIVE:
        conn.destroy(uuid)
    if conn.find_domain(uuid=uuid) is not None:
        conn.undefine(uuid)


def _settle_failure(migration: Migration, error: str, *, why: str = "") -> Migration:
    """libvirt reported an error (or the worker died): find out where the VM is and
    make it run on exactly one host, then record the outcome."""
    uuid = str(migration.vm_uuid)
    src_uri, dst_uri = migration.source.connection_uri, migration.destination.connection_uri
    src, src_error = _find(src_uri, uuid)
    dst, dst_error = _find(dst_uri, uuid)
    src_active = src is not None and src.state in ACTIVE
    dst_active = dst is not None and dst.state in ACTIVE
    notes: list[str] = []
    needs_cleanup = False

    if dst_active and dst.state == "running" and not src_active and src_error is None:
        # libvirt failed after the VM had switched over: it runs on the destination.
        notes.append(f"libvirt reported an error, but the VM runs on {migration.destination}")
        migration = _transition(
            migration,
            MigrationStatus.COMPLETING,
            "completing",
            error=f"{why}{error}; {notes[0]}",
        )
        _refresh_inventory(migration)
        return _transition(migration, MigrationStatus.SUCCEEDED, "succeeded", percent=100.0)

    if dst is not None:
        # Anything of this UUID on the destination is ours: the pre-check refused
        # destinations that already had it.
        cleanup_error = _with_host(dst_uri, lambda conn: _remove_domain(conn, uuid))
        if cleanup_error:
            needs_cleanup = True
            notes.append(f"the leftover on {migration.destination} could not be removed yet")
        else:
            notes.append(f"removed the incomplete copy on {migration.destination}")
    elif dst_error is not None:
        needs_cleanup = True
        notes.append(f"{migration.destination} could not be checked for a leftover copy")

    if src is not None and src.state == "paused" and migration.live:
        if _with_host(src_uri, lambda c: c.resume(uuid)) is None:
            notes.append(f"resumed the VM on {migration.source}")
    elif src is not None and not src_active and migration.live:
        if _with_host(src_uri, lambda c: c.start(uuid)) is None:
            notes.append(f"restarted the VM on {migration.source}")
        else:
            notes.append(f"THE VM IS NOT RUNNING on {migration.source}")
    elif src is None and src_error is not None:
        notes.append(f"{migration.source} could not be checked: {src_error}")

    cancelled = Migration.objects.filter(
        pk=migration.pk, cancel_requested_at__isnull=False
    ).exists()
    status = MigrationStatus.CANCELLED if cancelled else MigrationStatus.FAILED
    message = f"{why}{error}" + (f" ({'; '.join(notes)})" if notes else "")
    migration = _transition(
        migration,
        status,
        "cancelled" if cancelled else "failed",
        error=message,
        phase="cancelled" if cancelled else "failed",
        needs_cleanup=needs_cleanup,
    )
    _refresh_inventory(migration)
    return migration


# --- reconciliation ------------------------------------------------------------------


def _owner_is_dead_here(claimed_by: str) -> bool:
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # A killed process not yet reaped by its parent is a zombie: dead all the same.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def migrations_reconcile(*, wait_for_abort_s: float = 60.0) -> list[int]:
    """Settle migrations whose worker died; retry cleanups. Returns the settled ids.

    A migration is stale when its worker stopped writing heartbeats, or when it was
    claimed by a worker process of this machine that no longer exists.
    """
    stale_before = timezone.now() - timedelta(seconds=settings.MIGRATION_STALE_AFTER_S)
    candidates = Migration.objects.filter(status__in=RUNNING_STATUSES).select_related(
        "source", "destination"
    )
    settled = []
    me = f"reconciler {worker_identity()}"
    for migration in candidates:
        stale = (migration.heartbeat_at and migration.heartbeat_at < stale_before) or (
            _owner_is_dead_here(migration.claimed_by)
        )
        if not stale:
            continue
        # Take it over atomically: another reconciler may be looking at it too.
        taken = Migration.objects.filter(
            pk=migration.pk, claimed_by=migration.claimed_by, status=migration.status
        ).update(claimed_by=me, heartbeat_at=timezone.now())
        if not taken:
            continue
        previous_owner = migration.claimed_by
        migration.refresh_from_db()
        _settle_stale(migration, previous_owner, wait_for_abort_s)
        settled.append(migration.pk)
    for migration in Migration.objects.filter(needs_cleanup=True).select_related(
        "source", "destination"
    ):
        _retry_cleanup(migration)
    return settled


def _settle_stale(migration: Migration, previous_owner: str, wait_for_abort_s: float) -> None:
    uuid = str(migration.vm_uuid)
    src_uri = migration.source.connection_uri
    why = f"the worker running this migration ({previous_owner}) stopped; "

    def abort_and_wait(conn: gateway.HostConnection) -> None:
        if conn.find_domain(uuid=uuid) is None or not conn.job_stats(uuid):
            return
        try:
            conn.abort_job(uuid)
        except gateway.GatewayError as exc:
            logger.info("reconcile %s: abort: %s", migration.pk, exc)
        deadline = time.monotonic() + wait_for_abort_s
        while time.monotonic() < deadline:
            if conn.find_domain(uuid=uuid) is None or not conn.job_stats(uuid):
                return
            time.sleep(0.5)

    abort_error = _with_host(src_uri, abort_and_wait)
    if abort_error:
        logger.warning("reconcile %s: source not reachable: %s", migration.pk, abort_error)
    src, _ = _find(src_uri, uuid)
    dst, _ = _find(migration.destination.connection_uri, uuid)
    if dst is not None and dst.state == "running" and (src is None or src.state not in ACTIVE):
        migration = _transition(
            migration,
            MigrationStatus.COMPLETING,
            "completing",
            error=f"{why}libvirt finished the migration without it",
        )
        _refresh_inventory(migration)
        _transition(migration, MigrationStatus.SUCCEEDED, "succeeded", percent=100.0)
        return
    _settle_failure(migration, "settled by the reconciler from libvirt's state", why=why)


def _retry_cleanup(migration: Migration) -> None:
    uuid = str(migration.vm_uuid)
    src, src_error = _find(migration.source.connection_uri, uuid)
    if src_error or src is None or src.state not in ACTIVE:
        return  # only clean the destination while the VM is known to run on the source

    removal = _with_host(
        migration.destination.connection_uri, lambda conn: _remove_domain(conn, uuid)
    )
    if removal is None:
        with transaction.atomic():
            Migration.objects.filter(pk=migration.pk).update(needs_cleanup=False)
            audit_event_record(
                actor=_actor(),
                event_type="migration.cleaned_up",
                target=migration,
                detail={"destination": migration.destination.name, "vm_uuid": uuid},
            )
