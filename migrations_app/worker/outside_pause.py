"""The monitor's eye on the source's state: a pause that someone (a person, a tool)
made while the VM migrates is recorded, so that the VM ends paused wherever it ends
(completion pauses it again on arrival; settlement keeps or pauses it on the source)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import audit_event_record
from hosts import gateway
from migrations_app.domain import decisions
from migrations_app.models import Migration
from migrations_app.transitions import migration_audit_detail
from migrations_app.worker.lease import Lease, system_actor

logger = logging.getLogger(__name__)

# The source's state is read at most this often (each read is a libvirt call).
READ_EVERY_S = 1.0


class PauseWatch:
    def __init__(self, migration: Migration, lease: Lease) -> None:
        self.migration = migration
        self.lease = lease
        self.uuid = str(migration.vm_uuid)
        self.paused_since: float | None = None
        self.last_read = 0.0
        self.recorded = False

    def tick(
        self,
        conn: gateway.HostConnection,
        *,
        postcopy: bool,
        allowed_downtime_ms: int,
        paused_by_policy: bool,
    ) -> None:
        now = time.monotonic()
        if self.recorded or now - self.last_read < READ_EVERY_S:
            return
        self.last_read = now
        try:
            state, reason = conn.domain_state(self.uuid)
        except gateway.GatewayError:
            return  # the domain is leaving the source: the job is ending
        if state != "paused":
            self.paused_since = None
            return
        if self.paused_since is None:
            self.paused_since = now
        paused_for_s = now - self.paused_since
        if decisions.paused_by_someone(
            state=state,
            reason=reason,
            paused_for_s=paused_for_s,
            max_downtime_ms=allowed_downtime_ms,
            postcopy=postcopy,
            paused_by_policy=paused_by_policy,
            grace_s=settings.MIGRATION_OUTSIDE_PAUSE_GRACE_S,
        ):
            self._record(reason, paused_for_s)

    def _record(self, reason: str, paused_for_s: float) -> None:
        try:
            with transaction.atomic():
                marked = Migration.objects.filter(
                    pk=self.migration.pk, claim_epoch=self.lease.epoch
                ).update(paused_outside_at=timezone.now())
                if not marked:
                    self.lease.lost.set()
                    return
                audit_event_record(
                    actor=system_actor(self.lease.owner),
                    event_type=EventType.MIGRATION_PAUSED_OUTSIDE,
                    target=self.migration,
                    detail=migration_audit_detail(
                        self.migration,
                        libvirt_reason=reason,
                        paused_for_s=round(paused_for_s, 1),
                    ),
                )
            self.recorded = True
            logger.info("migration %s: the VM was paused by someone", self.migration.pk)
        except DatabaseError as exc:  # the next tick tries again
            logger.warning("migration %s: recording the pause: %s", self.migration.pk, exc)
            connection.close()
