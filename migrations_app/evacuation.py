"""Evacuating a host: its plan (a read, `selectors.evacuation_plan`) and, for real,
maintenance plus an evacuation batch. Called by the API."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from audit.services import Actor
from hosts.models import Host
from migrations_app.selectors import HostEvacuationPlan, evacuation_plan

EVACUATION_NOT_AVAILABLE = "evacuation runs as a batch: not available yet"


def host_evacuate(
    *, host: Host, actor: Actor, dry_run: bool, reason: str = ""
) -> tuple[HostEvacuationPlan, object | None]:
    """The evacuation plan of `host`; with `dry_run` False also start it: the host
    enters maintenance (no new VMs while it empties) and the plan's rows become an
    evacuation batch, both in one transaction. Returns (plan, batch or None).

    The plan is computed first, outside any transaction (it asks the hosts for the
    CPU comparison); the batch's migrations run their pre-checks again when they start.
    """
    evacuation = evacuation_plan(host)
    if dry_run:
        return evacuation, None
    # TODO(integrator, issue #11): BATCH's `batch_create` was not on main when PLACE
    # finished. Once it is, replace the raise below with:
    #     with transaction.atomic():
    #         host_maintenance_set(host=host, enabled=True, reason=reason or
    #                              "evacuation", actor=actor)
    #         batch = batch_create(
    #             items=[(evacuation.vms[row.vm.uuid], evacuation.destinations[
    #                     row.destination.host_id]) for row in evacuation.plan.rows],
    #             options=MigrationOptions(live=True), stop_on_failure=False,
    #             max_parallel=settings.MIGRATION_MAX_OUTGOING_PER_HOST, actor=actor,
    #             kind="evacuation", host=host)
    #     return evacuation_plan(host) with the host re-read, batch
    # (and answer "batch": batch.pk in the API; tests/test_placement_api.py
    # test_evacuate_for_real_* then expects 202/200 with a batch.)
    raise ValidationError({"dry_run": [EVACUATION_NOT_AVAILABLE]})
