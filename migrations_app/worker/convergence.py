"""The monitor's convergence part: judge the samples, make the progress honest, and do
what the migration's convergence policy decides (domain/convergence.py) on libvirt."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import audit_event_record
from hosts import gateway
from migrations_app.domain import convergence, decisions
from migrations_app.domain.convergence import Act, PolicyState, Step, Verdict
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.domain.progress import ProgressSample
from migrations_app.events import migration_publish
from migrations_app.models import Migration, MigrationStatus
from migrations_app.transitions import migration_audit_detail
from migrations_app.worker.lease import Lease, system_actor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Judged:
    sample: ProgressSample  # with the honest percent, phase and ETA
    verdict: Verdict


class ConvergenceMonitor:
    """One per running migration, fed every sample by the monitor loop."""

    def __init__(self, migration: Migration, lease: Lease) -> None:
        self.migration = migration
        self.lease = lease
        self.uuid = str(migration.vm_uuid)
        self.policy = migration.convergence_policy
        self.points: list[convergence.Point] = []
        self.state = PolicyState(allowed_downtime_ms=migration.max_downtime_ms)
        self.since_pass = 0  # a step restarts the count of stalled passes
        self.paused = False
        self.percent = 0.0
        # Kept once the policy aborted: the job's last figures say nothing about the copy.
        self.final: Verdict | None = None

    def downtime_read(self, read_ms: int) -> None:
        """libvirt's max downtime as read back (the monitor's first set, or a tune)."""
        self.state = replace(self.state, allowed_downtime_ms=read_ms)

    def judge(self, sample: ProgressSample, *, postcopy: bool) -> Judged:
        if self.final is not None:  # aborting: the job's last figures judge nothing
            return Judged(replace(sample, percent=self.percent, eta_s=None), self.final)
        self.points.append(
            convergence.Point(
                memory_iteration=sample.memory_iteration,
                data_remaining_bytes=sample.data_remaining_bytes,
                memory_dirty_rate_bytes_s=sample.memory_dirty_rate_bytes_s,
                throughput_bytes_s=sample.throughput_bytes_s,
            )
        )
        verdict = self._verdict()
        total, remaining = sample.data_total_bytes, sample.data_remaining_bytes
        raw = 100.0 * (total - remaining) / total if total and remaining is not None else 0.0
        self.percent = convergence.honest_percent(raw=raw, verdict=verdict, previous=self.percent)
        phase = sample.phase
        if postcopy:
            phase = Phase.POSTCOPY
        elif self.paused:
            phase = Phase.PAUSED_TO_FINISH
        elif phase == Phase.CONVERGING and not verdict.converging and verdict.passes >= 2:
            if verdict.stalled or verdict.outpaced:
                phase = Phase.NOT_CONVERGING
        honest = replace(
            sample,
            percent=self.percent,
            phase=phase,
            eta_s=convergence.eta_s(verdict, remaining),
        )
        return Judged(honest, verdict)

    def _verdict(self) -> Verdict:
        return convergence.judge(
            self.points,
            allowed_downtime_ms=self.state.allowed_downtime_ms,
            stall_passes=settings.MIGRATION_STALL_PASSES,
            since_pass=self.since_pass,
        )

    def act(self, conn: gateway.HostConnection, verdict: Verdict) -> decisions.Abort | None:
        """Apply the policy's next step; an Abort when the policy gave up (job aborted)."""
        if verdict.stalled and self.policy == convergence.ConvergencePolicy.MINIMAL_DOWNTIME:
            # A person may have tuned it meanwhile: step on from what libvirt has, never
            # below what they chose.
            self.state = replace(self.state, allowed_downtime_ms=conn.max_downtime(self.uuid))
        step = convergence.next_step(
            self.policy,
            verdict,
            self.state,
            downtime_steps=settings.MIGRATION_CONVERGENCE_DOWNTIME_STEPS_MS,
        )
        if step.act == Act.WAIT:
            return None
        figures: dict[str, object] = {}
        if step.act == Act.RAISE_DOWNTIME:
            conn.set_max_downtime(self.uuid, step.downtime_ms)
            read = conn.max_downtime(self.uuid)  # what libvirt really has
            self.state = replace(self.state, allowed_downtime_ms=read)
            figures["downtime_read_ms"] = read
            self._write(max_downtime_read_ms=read)
        elif step.act == Act.POSTCOPY:
            if not self._switch_postcopy(conn):
                return None
        elif step.act == Act.PAUSE:
            # Written first: a failure after the pause must resume what the portal paused.
            self._write(paused_for_convergence_at=timezone.now(), phase=Phase.PAUSED_TO_FINISH)
            try:
                conn.suspend(self.uuid)
            except gateway.HostUnreachable:
                raise  # unanswered, it may have paused: the column stays
            except gateway.GatewayError:
                self._write(paused_for_convergence_at=None)  # libvirt refused: not paused
                raise
            self.paused = True
        elif step.act == Act.ABORT:
            conn.abort_job(self.uuid)
            self.final = verdict
        self.since_pass = verdict.passes
        if step.act in (Act.POSTCOPY, Act.PAUSE):
            self.state = replace(self.state, acted=True)
        self._audit(step, verdict, figures)
        if step.act == Act.ABORT:
            return decisions.Abort(step.reason, FailureReason.NOT_CONVERGING)
        return None

    def _switch_postcopy(self, conn: gateway.HostConnection) -> bool:
        # As requests.migration_start_postcopy: the record says so before libvirt is asked.
        self._write(postcopy_started_at=timezone.now(), phase=Phase.POSTCOPY)
        try:
            conn.start_postcopy(self.uuid)
        except gateway.HostUnreachable:
            raise  # unanswered, it may have switched: the column stays
        except gateway.GatewayError as exc:
            logger.info("migration %s: post-copy not started: %s", self.migration.pk, exc)
            self._write(postcopy_started_at=None)
            return False
        return True

    def _write(self, **values: object) -> None:
        updated = Migration.objects.filter(
            pk=self.migration.pk, claim_epoch=self.lease.epoch, status=MigrationStatus.MIGRATING
        ).update(**values)
        if not updated:
            self.lease.lost.set()
            self.lease.check()

    def _audit(self, step: Step, verdict: Verdict, figures: dict[str, object]) -> None:
        detail = {
            "step": step.act.value,
            "policy": self.policy,
            "pass": verdict.passes,
            "trend_bytes": list(verdict.trend),
            "dirty_rate_bytes_s": verdict.dirty_rate_bytes_s,
            "throughput_bytes_s": verdict.throughput_bytes_s,
            "needed_downtime_ms": verdict.needed_downtime_ms,
            "allowed_downtime_ms": self.state.allowed_downtime_ms,
            "reason": step.reason,
            **figures,
        }
        try:
            with transaction.atomic():
                current = Migration.objects.select_related("source", "destination").get(
                    pk=self.migration.pk
                )
                audit_event_record(
                    actor=system_actor(self.lease.owner),
                    event_type=EventType.MIGRATION_CONVERGENCE_STEP,
                    target=current,
                    detail=migration_audit_detail(current, convergence=detail),
                )
                if step.act == Act.POSTCOPY:
                    audit_event_record(
                        actor=system_actor(self.lease.owner),
                        event_type=EventType.MIGRATION_POSTCOPY,
                        target=current,
                        detail=migration_audit_detail(current, by_policy=self.policy),
                    )
                migration_publish(migration=current, event="convergence_step")
        except DatabaseError as exc:  # the step was taken; only its record is lost
            logger.warning("migration %s: convergence step not audited: %s", self.migration.pk, exc)
            connection.close()
