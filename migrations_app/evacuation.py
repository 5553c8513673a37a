"""Evacuating a host: its plan, and for real, maintenance plus an evacuation batch."""

from __future__ import annotations

from dataclasses import replace

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import Actor
from hosts.models import Host
from hosts.services import host_maintenance_set
from migrations_app.batches import BatchItem, batch_create
from migrations_app.domain.options import MigrationOptions
from migrations_app.models import BatchKind, MigrationBatch, StorageMode
from migrations_app.selectors import HostEvacuationPlan, evacuation_plan

NOTHING_TO_MOVE = "no VM of this host can move now: see `unmovable` in the dry run"


def host_evacuate(
    *, host: Host, actor: Actor, dry_run: bool, reason: str = "", bandwidth_mib_s: int = 0
) -> tuple[HostEvacuationPlan, MigrationBatch | None]:
    """The evacuation plan of `host`; unless `dry_run`, also its maintenance and batch."""
    evacuation = evacuation_plan(host)
    if dry_run:
        return evacuation, None
    rows = evacuation.plan.rows
    if not rows:
        raise ValidationError({"dry_run": [NOTHING_TO_MOVE]})
    with transaction.atomic():
        reason = reason or host.maintenance_reason or "evacuation"
        host = host_maintenance_set(host=host, enabled=True, reason=reason, actor=actor)
        live = MigrationOptions(live=True, bandwidth_mib_s=bandwidth_mib_s)
        with_disks = replace(live, storage=StorageMode.COPY.value)
        batch = batch_create(
            items=[
                BatchItem(
                    evacuation.vms[row.vm.uuid],
                    evacuation.destinations[row.destination.host_id],
                    with_disks if row.vm.local_disks else live,
                )
                for row in rows
            ],
            options=live,
            stop_on_failure=False,
            max_parallel=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
            actor=actor,
            kind=BatchKind.EVACUATION,
            host=host,
        )
    return replace(evacuation, host=host), batch
