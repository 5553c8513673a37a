"""Run one claimed migration: pre-checks, libvirt's migration sampled, its outcome."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.events import EventType
from core import concurrency
from core.db import DbNow
from core.publish import publish_flush
from hosts import gateway
from hosts.access.peer_services import peer_trust_ensure, peer_trust_refused, peer_uri
from hosts.access.ssh_services import SshAccessError
from hosts.connections import host_connect
from hosts.models import Host
from migrations_app.domain import decisions
from migrations_app.domain.convergence import Verdict
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.domain.options import UNLIMITED_MIB_S, MigrationOptions
from migrations_app.domain.progress import ProgressSample, sample_from_job_stats
from migrations_app.events import migration_publish
from migrations_app.models import Migration, MigrationSample, MigrationStatus
from migrations_app.prechecks import MigrationPlan, run_prechecks
from migrations_app.scheduling.dispatch import migrations_dispatch_waiting
from migrations_app.transitions import ClaimLost
from migrations_app.worker.claim import ClaimOutcome, migration_claim
from migrations_app.worker.completion import migration_complete, refresh_inventory
from migrations_app.worker.convergence import ConvergenceMonitor
from migrations_app.worker.lease import Lease, heartbeat, system_actor, worker_identity
from migrations_app.worker.outside_pause import PauseWatch
from migrations_app.worker.settlement import cancel_requested, migration_settle

logger = logging.getLogger(__name__)


def migration_execute(*, migration_id: int, worker: str | None = None) -> str:
    """Run migration `migration_id` to its end; returns its status."""
    worker = worker or worker_identity()
    claim = migration_claim(migration_id, worker)
    if claim.outcome != ClaimOutcome.CLAIMED:
        if claim.outcome == ClaimOutcome.WAIT:
            logger.info("migration %s waits for its turn or a free slot", migration_id)
        return Migration.objects.get(pk=migration_id).status
    lease = claim.lease
    try:
        with heartbeat(lease):
            return _run_claimed(claim.migration, lease).status
    except ClaimLost:
        logger.warning("migration %s: this worker lost its claim and stopped", migration_id)
        return Migration.objects.get(pk=migration_id).status
    finally:
        migrations_dispatch_waiting()
        publish_flush()


def _precheck_failed(
    migration: Migration, lease: Lease, check_rows: list[dict], reasons: str
) -> Migration:
    """Failed before anything moved: a pre-check (or setting up peer access) refused."""
    return lease.change(
        migration,
        MigrationStatus.FAILED,
        EventType.MIGRATION_FAILED,
        checks=check_rows,
        phase=Phase.CHECKS_FAILED,
        error=f"Pre-checks failed: {reasons}",
        failure_reason=FailureReason.PRECHECK,
    )


def _run_claimed(migration: Migration, lease: Lease) -> Migration:
    plan = MigrationPlan.of_migration(migration)
    prechecks = run_prechecks(plan)
    lease.check()
    check_rows = [c.as_dict() for c in prechecks.results]
    if failed := prechecks.failed:
        reasons = "; ".join(f"{c.name}: {c.message}" for c in failed)
        migration = _precheck_failed(migration, lease, check_rows, reasons)
        if prechecks.engine_facts.changed_outside:
            refresh_inventory(migration, lease)  # the rows follow what was done outside
        return migration
    if cancel_requested(migration):
        return lease.change(
            migration,
            MigrationStatus.CANCELLED,
            EventType.MIGRATION_CANCELLED,
            checks=check_rows,
            phase=Phase.CANCELLED,
            error="Cancelled before libvirt started the migration.",
        )

    try:
        # The source's own ssh to the destination (peer-to-peer); no VM is touched.
        peer_trust_ensure(
            source=migration.source, destination=migration.destination, actor=system_actor()
        )
    except SshAccessError as exc:
        lease.check()
        return _precheck_failed(migration, lease, check_rows, f"peer_access: {exc}")
    lease.check()
    migration = lease.change(
        migration,
        MigrationStatus.MIGRATING,
        EventType.MIGRATION_STARTED,
        checks=check_rows,
        phase=Phase.SETUP,
        destination_had_definition=prechecks.engine_facts.destination_had_definition,
        source_was_paused=prechecks.engine_facts.source_was_paused,
    )
    cause, error = _migrate_and_monitor(migration, lease)
    if error is None:
        return migration_complete(migration, lease)
    if hint := peer_trust_refused(
        source=migration.source,
        destination=migration.destination,
        error=error,
        actor=system_actor(),
    ):
        error = f"{error}. {hint}"
    return migration_settle(migration, lease, error, cause=cause)


class _MonitorConnection:
    """The monitor's connection to the source, reopened when it breaks."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._stack: contextlib.ExitStack | None = None
        self._conn: gateway.HostConnection | None = None
        self._next_try = 0.0

    def get(self) -> gateway.HostConnection | None:
        if self._conn is None and time.monotonic() >= self._next_try:
            stack = contextlib.ExitStack()
            try:
                self._conn = stack.enter_context(host_connect(self.host, reuse=True))
                self._stack = stack
            except gateway.GatewayError as exc:
                logger.warning("monitor: %s not reachable: %s", self.host.name, exc)
                self._next_try = time.monotonic() + 2.0
        return self._conn

    def broken(self) -> None:
        if self._conn is not None:
            self._conn.mark_broken()  # not given out again by the pool
        self.close()
        self._next_try = time.monotonic() + 1.0

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._conn = None


def _migrate_and_monitor(
    migration: Migration, lease: Lease, *, postcopy_resume: bool = False
) -> tuple[FailureReason, str | None]:
    """Run libvirt's migration in a thread and sample it; the failure reason and error.
    `postcopy_resume`: recover a post-copy migration paused by a broken link instead."""
    uuid = str(migration.vm_uuid)
    outcome: dict[str, str] = {}

    def run() -> None:
        try:
            with host_connect(migration.source, reuse=True) as conn:
                call = conn.migrate_postcopy_resume if postcopy_resume else conn.migrate
                call(
                    uuid,
                    destination_uri=peer_uri(migration.source, migration.destination),
                    spec=MigrationOptions.from_migration(migration).to_spec(),
                )
        except gateway.GatewayError as exc:
            outcome["error"] = str(exc)
            if isinstance(exc, gateway.HostUnreachable):
                outcome["cause"] = FailureReason.UNREACHABLE
        except Exception as exc:  # never leave the monitor waiting on a dead thread
            logger.exception("migration %s: unexpected error", migration.pk)
            outcome["error"] = f"unexpected error: {exc}"
            outcome["cause"] = FailureReason.INTERNAL
        finally:
            connection.close()  # this thread's own (ssh files are read from the database)

    started = time.monotonic()
    runner = concurrency.start(run, name=f"migration-{migration.pk}")
    monitor = _MonitorConnection(migration.source)
    try:
        abort_reason = _monitor(
            migration,
            lease,
            runner,
            monitor,
            started,
            set_downtime=not postcopy_resume,
            resume_bound_s=settings.POSTCOPY_RESUME_START_S if postcopy_resume else None,
        )
    finally:
        monitor.close()
    if runner.running():
        outcome.setdefault(
            "error", "libvirt did not return from the migration call within its bound"
        )
    cause = outcome.get("cause", FailureReason.LIBVIRT)
    if "error" in outcome and abort_reason:
        return abort_reason.reason or cause, f"{abort_reason.text}: {outcome['error']}"
    return cause, outcome.get("error")


def _monitor(
    migration: Migration,
    lease: Lease,
    runner: concurrency.Pending[None],
    monitor: _MonitorConnection,
    started: float,
    *,
    set_downtime: bool = True,
    resume_bound_s: float | None = None,
) -> decisions.Abort | None:
    """Sample the job until the runner ends; returns why the portal aborted it, if it did.
    `resume_bound_s` (a post-copy resume): returns, leaving the runner, once the resume
    has not started within it (decisions.resume_stalled)."""
    uuid = str(migration.vm_uuid)
    interval = settings.MIGRATION_SAMPLE_INTERVAL_S
    # Past this the runner (a daemon) is given up on; the hosts' state settles it.
    hard_limit = migration.timeout_s + 2 * gateway.keepalive_bound_s() + 60
    converge = ConvergenceMonitor(migration, lease)
    pauses = PauseWatch(migration, lease)
    downtime_applied = not set_downtime  # a resumed post-copy has no downtime left to set
    bandwidth_read = not set_downtime
    abort_reason: decisions.Abort | None = None
    control = {"cancel_requested_at": None, "postcopy_started_at": None}
    next_tick = time.monotonic()
    while True:
        # A fixed cadence: the time a sample takes is not added to the interval.
        next_tick += interval
        if runner.wait(max(0.0, next_tick - time.monotonic())):
            return abort_reason
        lease.check()
        elapsed = time.monotonic() - started
        if elapsed > hard_limit:
            logger.error("migration %s: libvirt's call outlived its bound", migration.pk)
            return abort_reason or decisions.timed_out(migration.timeout_s)
        try:
            control = Migration.objects.values("cancel_requested_at", "postcopy_started_at").get(
                pk=migration.pk
            )
        except DatabaseError as exc:  # keep the last known controls; libvirt goes on
            logger.warning("migration %s: reading controls: %s", migration.pk, exc)
            connection.close()
        reason = decisions.abort_reason(
            cancel_requested=bool(control["cancel_requested_at"]),
            elapsed_s=elapsed,
            timeout_s=migration.timeout_s,
            postcopy_started=bool(control["postcopy_started_at"]),
        )
        conn = monitor.get()
        if conn is None:
            continue
        try:
            if resume_bound_s is not None and elapsed > resume_bound_s:
                _state, source_reason = conn.domain_state(uuid)
                stalled = decisions.resume_stalled(
                    elapsed_s=elapsed, bound_s=resume_bound_s, source_reason=source_reason
                )
                if stalled:
                    logger.error("migration %s: %s", migration.pk, stalled.text)
                    return stalled
                resume_bound_s = None  # it started: monitored like any post-copy
            if reason and abort_reason is None:
                try:
                    conn.abort_job(uuid)
                    abort_reason = reason
                except gateway.HostUnreachable:
                    raise
                except gateway.GatewayError as exc:
                    logger.info("migration %s: abort not possible yet: %s", migration.pk, exc)
            stats = conn.job_stats(uuid)
        except gateway.HostUnreachable as exc:
            logger.warning("migration %s: monitor connection broke: %s", migration.pk, exc)
            monitor.broken()
            continue
        except gateway.GatewayError:
            stats = {}  # the domain left the source at the very end
        if stats and not downtime_applied and migration.live:
            try:
                conn.set_max_downtime(uuid, migration.max_downtime_ms)
                downtime_applied = True
                if (read := _record_max_downtime_read(migration, lease, conn)) is not None:
                    converge.downtime_read(read)
            except gateway.GatewayError as exc:
                logger.info("migration %s: max downtime not set yet: %s", migration.pk, exc)
        if stats.get("memory_processed") and not bandwidth_read and migration.live:
            # Once memory flows libvirt has applied the job's own bandwidth parameter
            # (a tune in the seconds before was overwritten by it: applied again now).
            bandwidth_read = _record_bandwidth_read(migration, lease, conn)
        if stats:
            postcopy = bool(control["postcopy_started_at"])
            sample = sample_from_job_stats(stats, postcopy=postcopy)
            judged = converge.judge(sample, postcopy=postcopy)
            _record_sample(migration, lease, judged.sample, judged.verdict)
            if migration.live:
                pauses.tick(
                    conn,
                    postcopy=postcopy,
                    allowed_downtime_ms=converge.state.allowed_downtime_ms,
                    paused_by_policy=converge.paused,
                )
            if abort_reason is None and not postcopy and migration.live:
                try:
                    abort_reason = converge.act(conn, judged.verdict)
                except gateway.HostUnreachable as exc:
                    logger.warning("migration %s: policy step: %s", migration.pk, exc)
                    monitor.broken()
                except gateway.GatewayError as exc:  # e.g. the job ended meanwhile
                    logger.info("migration %s: policy step not taken: %s", migration.pk, exc)


def _record_max_downtime_read(
    migration: Migration, lease: Lease, conn: gateway.HostConnection
) -> int | None:
    """Keep libvirt's read-back of the max downtime just set; a failure changes nothing."""
    try:
        read = conn.max_downtime(str(migration.vm_uuid))
        Migration.objects.filter(pk=migration.pk, claim_epoch=lease.epoch).update(
            max_downtime_read_ms=read
        )
        return read
    except (gateway.GatewayError, DatabaseError) as exc:
        logger.info("migration %s: max downtime not read back: %s", migration.pk, exc)
        return None


def _record_bandwidth_read(
    migration: Migration, lease: Lease, conn: gateway.HostConnection
) -> bool:
    """The record's bandwidth (a person may have tuned it) set again, and libvirt's
    read-back of it kept, shown beside the downtime; False: not now, try again."""
    uuid = str(migration.vm_uuid)
    try:
        cap = Migration.objects.values_list("bandwidth_mib_s", flat=True).get(pk=migration.pk)
        if cap or cap != migration.bandwidth_mib_s:
            conn.set_max_speed(uuid, cap or UNLIMITED_MIB_S)
        Migration.objects.filter(pk=migration.pk, claim_epoch=lease.epoch).update(
            bandwidth_read_mib_s=conn.max_speed(uuid)
        )
        return True
    except (gateway.GatewayError, DatabaseError) as exc:  # the loop's next call tells
        logger.info("migration %s: bandwidth not read back: %s", migration.pk, exc)
        return False


def _record_sample(
    migration: Migration, lease: Lease, sample: ProgressSample, verdict: Verdict | None = None
) -> None:
    """Store and publish one sample; a database error loses only this sample."""
    now = timezone.now()
    values = asdict(sample)
    elapsed_ms = values.pop("elapsed_ms")
    eta_s = values.pop("eta_s")
    judged = (
        {"convergence_note": verdict.sentence, "remaining_trend_bytes": list(verdict.trend)}
        if verdict
        else {}
    )
    try:
        with transaction.atomic():
            updated = Migration.objects.filter(
                pk=migration.pk, claim_epoch=lease.epoch, status=MigrationStatus.MIGRATING
            ).update(progress_updated_at=now, heartbeat_at=DbNow(), eta_s=eta_s, **judged, **values)
            if not updated:
                lease.lost.set()
                lease.check()
            MigrationSample.objects.create(
                migration_id=migration.pk, taken_at=now, elapsed_ms=elapsed_ms, **values
            )
            current = Migration.objects.select_related("source", "destination").get(pk=migration.pk)
            migration_publish(
                migration=current,
                event="progress",
                sample={
                    "taken_at": now.isoformat(),
                    "elapsed_ms": elapsed_ms,
                    **asdict(sample),
                    **judged,
                },
            )
    except DatabaseError as exc:
        logger.warning("migration %s: sample not stored: %s", migration.pk, exc)
        connection.close()
