"""Evacuating a host: its plan (a read, `selectors.evacuation_plan`) and, for real,
maintenance plus an evacuation batch. Called by the API."""

from __future__ import annotations

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
    *, host: Host, actor: Actor, dry_run: bool, reason: str = ""
) -> tuple[HostEvacuationPlan, MigrationBatch | None]:
    """The evacuation plan of `host`; with `dry_run` False also start it: the host
    enters maintenance (no new VMs while it empties) and the plan's rows become an
    evacuation batch (live migrations, local disks copied, in the plan's order, at most
    MIGRATION_MAX_OUTGOING_PER_HOST at once, going on past a failure: one VM that
    cannot move must not keep the others on the host), in one transaction. Returns
    (plan, batch or None).

    The plan is computed first, outside any transaction (it asks the hosts for the
    CPU comparison); the batch's migrations run their pre-checks again when they start.
    Raises ValidationError on `dry_run` when nothing can move (nothing is changed).
    """
    evacuation = evacuation_plan(host)
    if dry_run:
        return evacuation, None
    rows = evacuation.plan.rows
    if not rows:
        raise ValidationError({"dry_run": [NOTHING_TO_MOVE]})
    with transaction.atomic():
        host = host_maintenance_set(
            host=host,
            enabled=True,
            reason=reason or host.maintenance_reason or "evacuation",
            actor=actor,
        )
        live = MigrationOptions(live=True)
        with_disks = MigrationOptions(live=True, storage=StorageMode.COPY.value)
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
    return HostEvacuationPlan(
        host=host,
        plan=evacuation.plan,
        vms=evacuation.vms,
        destinations=evacuation.destinations,
    ), batch
