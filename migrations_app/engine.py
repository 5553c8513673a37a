"""The migration engine: runs one migration in a worker, from claim to outcome.

claim (a fenced lease, when the hosts have a free slot) -> pre-checks -> libvirt
migrateToURI3 in a thread while this thread samples the job -> record the outcome.
Any failure is settled from what the hosts report, by the pure rules of
`decisions.py`; this module only gathers the facts and carries the decisions out.

Fencing: every claim or takeover raises the migration's `claim_epoch`. Every write of
the worker (transitions, samples, heartbeats) is a compare-and-set on that epoch, and
a heartbeat thread renews it for the whole task. A worker that lost its claim gets
`ClaimLost` at its next step and writes nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import gateway
from hosts.access.peer_services import peer_trust_ensure, peer_trust_refused, peer_uri
from hosts.access.ssh_services import SshAccessError
from hosts.connections import host_connect, host_connector
from hosts.models import Host
from migrations_app.domain import batch_rules, decisions
from migrations_app.domain.lifecycle import BatchStatus, FailureReason, Phase
from migrations_app.domain.options import MigrationOptions
from migrations_app.domain.progress import ProgressSample, disk_progress, sample_from_job_stats
from migrations_app.events import migration_publish, publish_flush
from migrations_app.models import (
    ALLOWED_TRANSITIONS,
    RUNNING_STATUSES,
    Migration,
    MigrationBatch,
    MigrationSample,
    MigrationStatus,
)
from migrations_app.prechecks import MigrationPlan, run_prechecks
from migrations_app.webhooks import webhooks_deliver_due, webhooks_migration_final
from vms.services import host_refresh, vm_sync_one

logger = logging.getLogger(__name__)

# How long a database write is retried (reconnecting) before the task gives up and
# leaves the migration to the reconciler.
DB_RETRY_S = 30.0


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _actor(owner: str | None = None) -> Actor:
    return Actor.system(owner or f"worker {worker_identity()}")


# --- fencing -------------------------------------------------------------------------


class ClaimLost(Exception):
    """This worker no longer owns the migration: it must stop and write nothing."""


class InvalidTransition(RuntimeError):
    """A status change the lifecycle does not allow (a bug, or a race lost)."""


@dataclass
class Lease:
    """The claim a worker (or reconciler) holds on one migration."""

    migration_id: int
    epoch: int
    owner: str
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.lost.is_set():
            raise ClaimLost(f"migration {self.migration_id}: claim {self.epoch} lost")

    def renew(self) -> None:
        """Heartbeat as a compare-and-set on the epoch; raises ClaimLost if taken over."""
        self.check()
        renewed = Migration.objects.filter(pk=self.migration_id, claim_epoch=self.epoch).update(
            heartbeat_at=timezone.now()
        )
        if not renewed:
            self.lost.set()
            self.check()


@contextlib.contextmanager
def _heartbeat(lease: Lease) -> Iterator[None]:
    """Renew the lease from a thread of its own for as long as the block runs, so that
    slow pre-checks, completion or settlement never look like a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.MIGRATION_HEARTBEAT_S):
                try:
                    lease.renew()
                except ClaimLost:
                    logger.warning(
                        "migration %s: claim taken over; this worker stops",
                        lease.migration_id,
                    )
                    return
                except DatabaseError as exc:  # a blip: the next beat reconnects
                    logger.warning("migration %s: heartbeat: %s", lease.migration_id, exc)
                    connection.close()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{lease.migration_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _db_retry(what: str, write: Callable[[], Migration]) -> Migration:
    """Run a database write, reconnecting on connection errors for up to DB_RETRY_S."""
    deadline = time.monotonic() + DB_RETRY_S
    while True:
        try:
            return write()
        except (ClaimLost, InvalidTransition):
            raise
        except DatabaseError as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("%s: database error, retrying: %s", what, exc)
            connection.close()
            time.sleep(1.0)


def _audit(
    migration: Migration, event: EventType, *, actor: Actor, before: str | None = None, **detail
) -> None:
    audit_event_record(
        actor=actor,
        event_type=event,
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


def _transition(
    migration: Migration,
    lease: Lease,
    status: str,
    event: EventType,
    *,
    also: Callable[[Migration], None] | None = None,
    **fields,
) -> Migration:
    """Change status (and fields) with its audit row in one transaction, as a
    compare-and-set on the lease's epoch and the lifecycle; publish after commit.
    `also` runs in the same transaction (the VM's inventory row on `succeeded`)."""

    def write() -> Migration:
        with transaction.atomic():
            # Only the migration's row: FOR UPDATE over the join would lock both hosts
            # too, against every insert that checks a foreign key to them (PostgreSQL).
            current = (
                Migration.objects.select_for_update(of=("self",))
                .select_related("source", "destination")
                .get(pk=migration.pk)
            )
            if current.claim_epoch != lease.epoch:
                lease.lost.set()
                lease.check()
            before = current.status
            if status != before and status not in ALLOWED_TRANSITIONS.get(before, ()):
                raise InvalidTransition(f"migration {migration.pk}: {before} -> {status}")
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
            _audit(
                current,
                event,
                actor=_actor(lease.owner),
                before=before,
                error=current.error or None,
            )
            if also is not None:
                also(current)
            webhooks_migration_final(migration=current)
            migration_publish(migration=current, event=event.action)
        return current

    return _db_retry(f"migration {migration.pk} -> {status}", write)


# --- claim ---------------------------------------------------------------------------


def _try_claim(migration_id: int, worker: str) -> tuple[str, Migration | None, Lease | None]:
    """('claimed', m, lease) | ('wait', None, None) | ('not-mine', None, None)."""
    batch_id = Migration.objects.filter(pk=migration_id).values_list("batch_id", flat=True).first()
    with transaction.atomic():
        # A batch's row is locked before its child's, as batch_services does.
        gate_open = batch_id is None or _batch_gate_open(batch_id)
        migration = (
            Migration.objects.select_for_update(of=("self",))
            .select_related("source", "destination")
            .get(pk=migration_id)
        )
        if migration.status != MigrationStatus.QUEUED or migration.claimed_by:
            return "not-mine", None, None  # cancelled, or a redelivery of a claimed task
        now = timezone.now()
        if decisions.window_closed(window_end=migration.window_end, now=now):
            from migrations_app.services import migration_window_close

            migration_window_close(migration=migration, actor=_actor(), now=now)
            return "not-mine", None, None  # too late: it must not start any more
        if not gate_open:
            # Not its turn in the batch: back to waiting, out of the broker; the
            # dispatcher enqueues it again when the batch lets it start.
            migration.phase = Phase.WAITING_FOR_BATCH
            migration.enqueued_at = None
            migration.save(update_fields=["phase", "enqueued_at"])
            return "wait", None, None
        # Lock both hosts so that concurrent claims count each other's slots: in pk
        # order (no deadlock between claims), FOR NO KEY UPDATE (a request inserting a
        # migration of these hosts checks its foreign keys with FOR KEY SHARE, which
        # this must not block: scale-out test, PostgreSQL deadlocks otherwise).
        list(
            Host.objects.select_for_update(no_key=True)
            .filter(pk__in=[migration.source_id, migration.destination_id])
            .order_by("pk")
        )
        running = Migration.objects.filter(status__in=RUNNING_STATUSES)
        if not decisions.slot_free(
            outgoing=running.filter(source_id=migration.source_id).count(),
            incoming=running.filter(destination_id=migration.destination_id).count(),
            max_outgoing=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
            max_incoming=settings.MIGRATION_MAX_INCOMING_PER_HOST,
        ):
            if migration.phase != Phase.WAITING_FOR_SLOT:
                migration.phase = Phase.WAITING_FOR_SLOT
                migration.save(update_fields=["phase"])
                migration_publish(migration=migration, event="waiting")
            return "wait", None, None
        migration.status = MigrationStatus.CHECKING
        migration.claimed_by = worker
        migration.claim_epoch += 1
        migration.started_at = migration.heartbeat_at = timezone.now()
        migration.phase = Phase.CHECKING
        migration.save()
        _audit(
            migration,
            EventType.MIGRATION_CHECKING,
            actor=_actor(),
            before=MigrationStatus.QUEUED,
            worker=worker,
        )
        migration_publish(migration=migration, event="checking")
        if batch_id is not None:  # its batch runs from its first claim (row locked above)
            MigrationBatch.objects.filter(pk=batch_id, status=BatchStatus.QUEUED).update(
                status=BatchStatus.RUNNING, started_at=timezone.now()
            )
    return "claimed", migration, Lease(migration.pk, migration.claim_epoch, f"worker {worker}")


def _batch_gate_open(batch_id: int) -> bool:
    """May a child of this batch start now? Read under the batch's row lock, so two
    claims of one batch count each other (batch_rules.batch_gate_open)."""
    batch = MigrationBatch.objects.select_for_update().get(pk=batch_id)
    children = [
        batch_rules.Child(pk, status)
        for pk, status in batch.children.order_by("pk").values_list("pk", "status")
    ]
    return batch_rules.batch_gate_open(
        children=children,
        max_parallel=batch.max_parallel,
        stop_on_failure=batch.stop_on_failure,
        cancel_requested=batch.cancel_requested_at is not None,
    )


# --- run -----------------------------------------------------------------------------


def migration_execute(*, migration_id: int, worker: str | None = None) -> str:
    """Run migration `migration_id` to its end; returns the status it is left in.

    A migration whose hosts have no free slot is not waited for here: it stays queued
    (phase `waiting_for_slot`) and is enqueued again when a slot frees up, so that
    waiting never holds a worker.
    """
    from migrations_app.services import migrations_dispatch_waiting

    worker = worker or worker_identity()
    outcome, migration, lease = _try_claim(migration_id, worker)
    if outcome != "claimed":
        if outcome == "wait":
            logger.info("migration %s waits for a free slot on its hosts", migration_id)
        return Migration.objects.get(pk=migration_id).status
    try:
        with _heartbeat(lease):
            return _run_claimed(migration, lease).status
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
    return _transition(
        migration,
        lease,
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
    failed = prechecks.failed
    check_rows = [c.as_dict() for c in prechecks.results]
    if failed:
        reasons = "; ".join(f"{c.name}: {c.message}" for c in failed)
        return _precheck_failed(migration, lease, check_rows, reasons)
    if _cancel_requested(migration):
        return _transition(
            migration,
            lease,
            MigrationStatus.CANCELLED,
            EventType.MIGRATION_CANCELLED,
            checks=check_rows,
            phase=Phase.CANCELLED,
            error="Cancelled before libvirt started the migration.",
        )

    try:
        # Changes nothing on a VM: the source's key and the destination's pinned host
        # key, for the source's own ssh to the destination (peer-to-peer).
        peer_trust_ensure(
            source=migration.source, destination=migration.destination, actor=_actor()
        )
    except SshAccessError as exc:
        lease.check()
        return _precheck_failed(migration, lease, check_rows, f"peer_access: {exc}")
    lease.check()
    migration = _transition(
        migration,
        lease,
        MigrationStatus.MIGRATING,
        EventType.MIGRATION_STARTED,
        checks=check_rows,
        phase=Phase.SETUP,
        destination_had_definition=prechecks.engine_facts.destination_had_definition,
        source_was_paused=prechecks.engine_facts.source_was_paused,
    )
    cause, error = _migrate_and_monitor(migration, lease)
    if error is None:
        return _complete(migration, lease)
    hint = peer_trust_refused(
        source=migration.source, destination=migration.destination, error=error, actor=_actor()
    )
    if hint:
        error = f"{error}. {hint}"
    return _settle(migration, lease, error, cause=cause)


class _MonitorConnection:
    """The monitor's connection to the source (the process's long-lived one, which
    the runner's migrateToURI3 call shares), reopened (bounded) when it breaks."""

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


def _migrate_and_monitor(migration: Migration, lease: Lease) -> tuple[FailureReason, str | None]:
    """Run libvirt's migration in a thread and sample it; returns what ended it (a
    failure reason) and libvirt's error, or None if it succeeded.

    Cancel and `timeout_s` are enforced here even when the monitor's connection breaks
    (it is reopened), and the wait is bounded: libvirt's keepalive ends the runner's
    call when the source stops answering.
    """
    uuid = str(migration.vm_uuid)
    outcome: dict[str, str] = {}

    def run() -> None:
        try:
            with host_connect(migration.source, reuse=True) as conn:
                conn.migrate(
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

    runner = threading.Thread(target=run, name=f"migration-{migration.pk}", daemon=True)
    started = time.monotonic()
    runner.start()
    monitor = _MonitorConnection(migration.source)
    try:
        abort_reason = _monitor(migration, lease, runner, monitor, started)
    finally:
        monitor.close()
    if runner.is_alive():
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
    runner: threading.Thread,
    monitor: _MonitorConnection,
    started: float,
) -> decisions.Abort | None:
    """Sample the job until the runner ends; returns why the portal aborted it, if it did."""
    uuid = str(migration.vm_uuid)
    interval = settings.MIGRATION_SAMPLE_INTERVAL_S
    # Past this the runner is given up on (it is a daemon thread) and the outcome is
    # settled from what the hosts report.
    hard_limit = migration.timeout_s + 2 * gateway.keepalive_bound_s() + 60
    percent = 0.0
    downtime_applied = False
    abort_reason: decisions.Abort | None = None
    control = {"cancel_requested_at": None, "postcopy_started_at": None}
    next_tick = time.monotonic()
    while True:
        # A fixed cadence: the time a sample takes is not added to the interval.
        next_tick += interval
        runner.join(max(0.0, next_tick - time.monotonic()))
        if not runner.is_alive():
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
                _record_max_downtime_read(migration, lease, conn)
            except gateway.GatewayError as exc:
                logger.info("migration %s: max downtime not set yet: %s", migration.pk, exc)
        if stats:
            sample = sample_from_job_stats(
                stats,
                previous_percent=percent,
                postcopy=bool(control["postcopy_started_at"]),
            )
            percent = sample.percent
            _record_sample(migration, lease, sample)


def _record_max_downtime_read(
    migration: Migration, lease: Lease, conn: gateway.HostConnection
) -> None:
    """Keep what libvirt reports back for the max downtime just set (the record shows
    that it took); a failure to read or store it changes nothing else."""
    try:
        read = conn.max_downtime(str(migration.vm_uuid))
        Migration.objects.filter(pk=migration.pk, claim_epoch=lease.epoch).update(
            max_downtime_read_ms=read
        )
    except (gateway.GatewayError, DatabaseError) as exc:
        logger.info("migration %s: max downtime not read back: %s", migration.pk, exc)


def _record_sample(migration: Migration, lease: Lease, sample: ProgressSample) -> None:
    """Store and publish one sample. A database error loses this sample only: the
    migration goes on (it is libvirt's job, not the database's)."""
    now = timezone.now()
    values = asdict(sample)
    elapsed_ms = values.pop("elapsed_ms")
    eta_s = values.pop("eta_s")
    try:
        with transaction.atomic():
            updated = Migration.objects.filter(
                pk=migration.pk, claim_epoch=lease.epoch, status=MigrationStatus.MIGRATING
            ).update(progress_updated_at=now, heartbeat_at=now, eta_s=eta_s, **values)
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
                sample={"taken_at": now.isoformat(), "elapsed_ms": elapsed_ms, **asdict(sample)},
            )
    except DatabaseError as exc:
        logger.warning("migration %s: sample not stored: %s", migration.pk, exc)
        connection.close()


# --- outcomes ------------------------------------------------------------------------


def _complete(migration: Migration, lease: Lease, *, note: str = "") -> Migration:
    """libvirt finished (or the VM was found running on the destination): record it."""
    if migration.status != MigrationStatus.COMPLETING:
        migration = _transition(
            migration,
            lease,
            MigrationStatus.COMPLETING,
            EventType.MIGRATION_COMPLETING,
            phase=Phase.COMPLETING,
            failure_reason="",
            **({"error": note} if note else {}),
        )
    uuid = str(migration.vm_uuid)
    stats: dict = {}
    seen: dict[str, gateway.DomainInfo | None] = {}
    # On the long-lived connections, both hosts at once: libvirt's figures, and where
    # the VM is now (for its inventory rows, written with `succeeded`).
    open_destination = host_connector(migration.destination, reuse=True)
    open_source = host_connector(migration.source, reuse=True)

    def read_destination() -> None:
        try:
            with open_destination() as conn:
                stats.update(conn.completed_job_stats(uuid))
                seen["destination"] = conn.find_domain(uuid=uuid)
        except gateway.GatewayError as exc:
            logger.warning("migration %s: no completed statistics: %s", migration.pk, exc)

    def read_source() -> None:
        try:
            with open_source() as conn:
                seen["source"] = conn.find_domain(uuid=uuid)
        except gateway.GatewayError as exc:
            logger.info("migration %s: source not read after completion: %s", migration.pk, exc)

    reader = threading.Thread(target=read_source, name=f"complete-{migration.pk}", daemon=True)
    reader.start()
    read_destination()
    # Bounded as any call on an open connection; past it the source's row is left to
    # the inventory sync.
    reader.join(gateway.keepalive_bound_s() + settings.LIBVIRT_CONNECT_TIMEOUT_S)
    seen = dict(seen)
    lease.check()
    _db_retry("final sample", lambda: _record_final_sample(migration, stats))
    actor = _actor(lease.owner)

    def vm_rows(current: Migration) -> None:
        synced_at = timezone.now()
        for side, host in (("source", current.source), ("destination", current.destination)):
            if side in seen:
                vm_sync_one(host=host, uuid=uuid, info=seen[side], synced_at=synced_at, actor=actor)

    migration = _transition(
        migration,
        lease,
        MigrationStatus.SUCCEEDED,
        EventType.MIGRATION_SUCCEEDED,
        also=vm_rows,
        phase=Phase.DONE,
        percent=100.0,
        eta_s=0,
        data_remaining_bytes=0 if migration.data_remaining_bytes is not None else None,
        needs_cleanup=False,
        **_completed_fields(stats),
    )
    # After `succeeded` is recorded and published: the full sync of both hosts
    # (capabilities, free memory, every VM) does not delay it.
    _refresh_inventory(migration, lease, reuse=True)
    return migration


def _record_final_sample(migration: Migration, stats: dict) -> Migration:
    """The last sample: everything sent, as libvirt's completed statistics say."""
    MigrationSample.objects.create(
        migration_id=migration.pk,
        taken_at=timezone.now(),
        elapsed_ms=int(stats.get("time_elapsed") or 0),
        phase=Phase.DONE,
        percent=100.0,
        data_total_bytes=stats.get("data_total"),
        data_processed_bytes=stats.get("data_processed"),
        data_remaining_bytes=stats.get("data_remaining", 0),
        memory_dirty_rate_bytes_s=None,
        memory_iteration=stats.get("memory_iteration"),
        throughput_bytes_s=stats.get("memory_bps"),
        **disk_progress(stats),
    )
    return migration


def _completed_fields(stats: dict) -> dict:
    if not stats:
        return {}
    return {
        "completed_stats": stats,
        "total_time_ms": stats.get("time_elapsed"),
        "downtime_ms": stats.get("downtime"),
        "setup_time_ms": stats.get("setup_time"),
        "transferred_bytes": stats.get("data_processed"),
        # The copied disks' final figures, if any (the running samples' otherwise stay).
        **{k: v for k, v in disk_progress(stats).items() if v is not None},
    }


def _refresh_inventory(migration: Migration, lease: Lease, *, reuse: bool = False) -> None:
    actor = _actor(lease.owner)
    for host in (migration.source, migration.destination):
        try:
            host_refresh(host=host, actor=actor, reuse=reuse)
        except DatabaseError as exc:  # the record matters more than the inventory
            logger.warning("migration %s: inventory refresh: %s", migration.pk, exc)
            connection.close()


def _observe(host: Host, uuid: str) -> tuple[decisions.HostView, str]:
    """What one host says about the VM (bounded by the connect timeout and keepalive)."""
    job_active = None
    try:
        with host_connect(host) as conn:
            domain = conn.find_domain(uuid=uuid)
            if domain is not None and domain.state in decisions.ACTIVE_STATES:
                try:
                    job_active = bool(conn.job_stats(uuid))
                except gateway.DomainNotFound:
                    domain = None  # it left between the two calls
    except gateway.GatewayError as exc:
        return decisions.UNREACHABLE, str(exc)
    return (
        decisions.HostView(
            reachable=True, state=domain.state if domain else None, job_active=job_active
        ),
        "",
    )


def _cancel_requested(migration: Migration) -> bool:
    """Read fresh: the API sets it while the worker runs."""
    return Migration.objects.filter(pk=migration.pk, cancel_requested_at__isnull=False).exists()


def _postcopy_started(migration: Migration) -> bool:
    """Read fresh: the API sets it while the worker runs."""
    return Migration.objects.filter(pk=migration.pk, postcopy_started_at__isnull=False).exists()


def _settle_input(migration: Migration) -> tuple[decisions.SettleInput, list[str]]:
    uuid = str(migration.vm_uuid)
    src, src_error = _observe(migration.source, uuid)
    dst, dst_error = _observe(migration.destination, uuid)
    postcopy = _postcopy_started(migration)
    errors = [
        f"{host}: {error}"
        for host, error in ((migration.source, src_error), (migration.destination, dst_error))
        if error
    ]
    given = decisions.SettleInput(
        source=src,
        destination=dst,
        live=migration.live,
        postcopy_started=postcopy,
        destination_had_definition=migration.destination_had_definition,
        source_was_paused=migration.source_was_paused,
        source_name=migration.source.name,
        destination_name=migration.destination.name,
    )
    return given, errors


_OPS = {
    decisions.Op.DESTROY: lambda conn, uuid: conn.destroy(uuid),
    decisions.Op.UNDEFINE: lambda conn, uuid: conn.undefine(uuid),
    decisions.Op.RESUME: lambda conn, uuid: conn.resume(uuid),
    decisions.Op.START: lambda conn, uuid: conn.start(uuid),
}


def _carry_out(
    migration: Migration, lease: Lease | None, actions: tuple[decisions.Action, ...]
) -> str | None:
    """Apply the actions in order; returns the error of the first that failed, if any.

    The lease, if the migration is still owned, is renewed right before each action: a
    worker that lost its claim changes nothing on a host.
    """
    uuid = str(migration.vm_uuid)
    for action in actions:
        host = migration.source if action.side == decisions.Side.SOURCE else migration.destination
        if lease is not None:
            lease.renew()
        try:
            with host_connect(host) as conn:
                _OPS[action.op](conn, uuid)
        except gateway.GatewayError as exc:
            return f"could not {action.op} the VM on {host.name}: {exc}"
    return None


def _settle(
    migration: Migration,
    lease: Lease,
    error: str,
    *,
    why: str = "",
    cause: FailureReason = FailureReason.LIBVIRT,
) -> Migration:
    """libvirt reported an error (or the worker died): find out where the VM is, make
    it run on exactly one host if that is safe, and record what really happened
    (`cause`, what ended the migration, gives its failure reason)."""
    given, unreachable = _settle_input(migration)
    settlement = decisions.settle(given)
    notes = list(settlement.notes)
    outcome = settlement.outcome
    failed_action = _carry_out(migration, lease, settlement.actions)
    if failed_action:
        notes.append(failed_action)
        outcome = decisions.Outcome.NEEDS_ATTENTION
    notes.extend(unreachable)
    message = f"{why}{error}" + (f" ({'; '.join(notes)})" if notes else "")
    reason = decisions.failure_reason(
        cause=cause,
        cancel_requested=_cancel_requested(migration),
        hosts_unreachable=bool(unreachable),
    )

    if outcome == decisions.Outcome.SUCCEEDED:
        return _complete(migration, lease, note=message)
    if outcome == decisions.Outcome.NEEDS_ATTENTION:
        migration = _transition(
            migration,
            lease,
            MigrationStatus.NEEDS_ATTENTION,
            EventType.MIGRATION_NEEDS_ATTENTION,
            error=message,
            phase=Phase.NEEDS_ATTENTION,
            failure_reason=reason or "",
        )
        return migration
    cancelled = reason is None
    migration = _transition(
        migration,
        lease,
        MigrationStatus.CANCELLED if cancelled else MigrationStatus.FAILED,
        EventType.MIGRATION_CANCELLED if cancelled else EventType.MIGRATION_FAILED,
        error=message,
        phase=Phase.CANCELLED if cancelled else Phase.FAILED,
        failure_reason=reason or "",
        needs_cleanup=settlement.needs_cleanup,
    )
    _refresh_inventory(migration, lease)
    return migration


# --- reconciliation ------------------------------------------------------------------


def _take_over(migration: Migration, owner: str) -> Lease | None:
    """Compare-and-set: raise the epoch only if nobody wrote a heartbeat or changed the
    migration since we read it. Another reconciler, or the revived worker, wins
    otherwise."""
    taken = Migration.objects.filter(
        pk=migration.pk,
        claim_epoch=migration.claim_epoch,
        status=migration.status,
        heartbeat_at=migration.heartbeat_at,
    ).update(claimed_by=owner, claim_epoch=F("claim_epoch") + 1, heartbeat_at=timezone.now())
    if not taken:
        return None
    return Lease(migration.pk, migration.claim_epoch + 1, owner)


def migrations_reconcile(*, wait_for_abort_s: float = 60.0) -> list[int]:
    """One pass of the reconciler; returns the ids of the migrations it settled.

    - running migrations whose worker stopped (no heartbeat in the database for
      MIGRATION_STALE_AFTER_S) are taken over and settled from what libvirt reports.
      The heartbeat is the only sign of life: the worker may run on another portal
      node, where no pid of this machine means anything (docs/nodes.md);
    - migrations that need attention are settled once both hosts answer;
    - leftovers of failed migrations are removed once it is safe;
    - queued migrations whose task was lost are enqueued again;
    - scheduled migrations that are due are queued, and waiting ones whose window
      closed fail (window_closed);
    - webhook deliveries that are due are sent (retries with back-off).
    """
    from migrations_app.services import migrations_dispatch_waiting, migrations_schedule_run

    me = f"reconciler {worker_identity()}"
    settled = []
    running = Migration.objects.filter(status__in=RUNNING_STATUSES).select_related(
        "source", "destination"
    )
    for migration in running:
        heartbeat_age = (
            (timezone.now() - migration.heartbeat_at).total_seconds()
            if migration.heartbeat_at
            else None
        )
        stale = decisions.is_stale(
            heartbeat_age_s=heartbeat_age, stale_after_s=settings.MIGRATION_STALE_AFTER_S
        )
        if not stale:
            continue
        lease = _take_over(migration, me)
        if lease is None:
            continue
        previous_owner = migration.claimed_by
        migration.refresh_from_db()
        try:
            with _heartbeat(lease):
                _settle_stale(migration, lease, previous_owner, wait_for_abort_s)
            settled.append(migration.pk)
        except ClaimLost:
            logger.warning("reconcile %s: taken over by another reconciler", migration.pk)

    attention = Migration.objects.filter(status=MigrationStatus.NEEDS_ATTENTION).select_related(
        "source", "destination"
    )
    for migration in attention:
        if _settle_attention(migration, me):
            settled.append(migration.pk)

    for migration in Migration.objects.filter(needs_cleanup=True).select_related(
        "source", "destination"
    ):
        _retry_cleanup(migration, me)

    migrations_schedule_run()
    migrations_dispatch_waiting(include_lost=True)
    # Webhook retries (and first attempts whose task was lost) wait in the database.
    webhooks_deliver_due()
    return settled


def _settle_stale(
    migration: Migration, lease: Lease, previous_owner: str, wait_for_abort_s: float
) -> None:
    why = f"the worker running this migration ({previous_owner}) stopped; "
    if migration.status == MigrationStatus.CHECKING:
        # The worker sets `migrating` before it asks libvirt: nothing was started.
        _transition(
            migration,
            lease,
            MigrationStatus.FAILED,
            EventType.MIGRATION_FAILED,
            phase=Phase.FAILED,
            error=f"{why}it died during the pre-checks; nothing was started",
            failure_reason=FailureReason.WORKER_LOST,
        )
        return
    if migration.status == MigrationStatus.MIGRATING:
        _stop_job(migration, lease, wait_for_abort_s)
    # If libvirt finished without the worker, the VM runs on the destination and the
    # settlement records it as succeeded.
    _settle(
        migration,
        lease,
        "settled by the reconciler from libvirt's state",
        why=why,
        cause=FailureReason.WORKER_LOST,
    )


def _stop_job(migration: Migration, lease: Lease, wait_for_abort_s: float) -> None:
    """Abort the orphaned libvirt job on the source (never once post-copy started:
    then only wait for it to end), bounded by `wait_for_abort_s`."""
    uuid = str(migration.vm_uuid)
    postcopy = _postcopy_started(migration)
    try:
        with host_connect(migration.source) as conn:
            if conn.find_domain(uuid=uuid) is None or not conn.job_stats(uuid):
                return
            if not postcopy:
                lease.renew()
                try:
                    conn.abort_job(uuid)
                except gateway.GatewayError as exc:
                    logger.info("reconcile %s: abort: %s", migration.pk, exc)
            deadline = time.monotonic() + wait_for_abort_s
            while time.monotonic() < deadline:
                if conn.find_domain(uuid=uuid) is None or not conn.job_stats(uuid):
                    return
                lease.check()
                time.sleep(0.5)
    except gateway.GatewayError as exc:
        logger.warning("reconcile %s: source not reachable: %s", migration.pk, exc)


def _settle_attention(migration: Migration, owner: str) -> bool:
    """Try again to settle a migration that needs attention; True if it was settled."""
    given, _ = _settle_input(migration)
    if not (given.source.reachable and given.destination.reachable):
        return False
    if decisions.settle(given).outcome == decisions.Outcome.NEEDS_ATTENTION:
        return False  # still not safe to decide (e.g. running on both): left to an operator
    lease = _take_over(migration, owner)
    if lease is None:
        return False
    migration.refresh_from_db()
    try:
        with _heartbeat(lease):
            _settle(
                migration,
                lease,
                "settled once both hosts answered",
                why=f"{migration.error}; " if migration.error else "",
                cause=migration.failure_reason or FailureReason.UNREACHABLE,
            )
    except ClaimLost:
        return False
    return True


def _retry_cleanup(migration: Migration, owner: str) -> None:
    uuid = str(migration.vm_uuid)
    later = Migration.objects.filter(vm_uuid=migration.vm_uuid, created_at__gt=migration.created_at)
    src, _ = _observe(migration.source, uuid)
    dst, _ = _observe(migration.destination, uuid)
    actions = decisions.cleanup_actions(
        source=src,
        destination=dst,
        destination_had_definition=migration.destination_had_definition,
        later_migration_of_vm=later.exists(),
    )
    if actions is None:
        return
    # A final record has no owner to fence: cleanup_actions only ever names the
    # destination's leftover, while the VM is known to run on the source.
    error = _carry_out(migration, None, actions)
    if error:
        logger.info("cleanup of migration %s: %s", migration.pk, error)
        return
    with transaction.atomic():
        cleared = Migration.objects.filter(pk=migration.pk, needs_cleanup=True).update(
            needs_cleanup=False
        )
        if cleared:
            audit_event_record(
                actor=_actor(owner),
                event_type=EventType.MIGRATION_CLEANED_UP,
                target=migration,
                detail={
                    "destination": migration.destination.name,
                    "vm_uuid": uuid,
                    "removed": [a.op.value for a in actions],
                },
            )
