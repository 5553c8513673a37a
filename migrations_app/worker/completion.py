"""A migration libvirt finished: final figures, the VM's rows, then `succeeded`."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from audit.events import EventType
from core import concurrency
from hosts import gateway
from hosts.connections import host_connector
from migrations_app.domain.lifecycle import Phase
from migrations_app.domain.progress import completed_fields, disk_progress
from migrations_app.models import Migration, MigrationSample, MigrationStatus
from migrations_app.scheduling.dispatch import dispatch_after_commit
from migrations_app.worker.lease import Lease, db_retry, system_actor
from vms.services import host_refresh, vm_sync_one

logger = logging.getLogger(__name__)


def migration_complete(migration: Migration, lease: Lease, *, note: str = "") -> Migration:
    """libvirt finished (or the VM was found running on the destination): record it."""
    if migration.status != MigrationStatus.COMPLETING:
        migration = lease.change(
            migration,
            MigrationStatus.COMPLETING,
            EventType.MIGRATION_COMPLETING,
            phase=Phase.COMPLETING,
            failure_reason="",
            **({"error": note} if note else {}),
        )
    uuid = str(migration.vm_uuid)
    stats: dict = {}
    seen: dict[str, gateway.DomainInfo | None] = {}
    # Both hosts at once: libvirt's figures, and where the VM is now.
    open_destination = host_connector(migration.destination, reuse=True)
    open_source = host_connector(migration.source, reuse=True)

    paused_outside = Migration.objects.filter(
        pk=migration.pk, paused_outside_at__isnull=False
    ).exists()
    notes = [note] if note else []

    def read_destination() -> None:
        try:
            with open_destination() as conn:
                stats.update(conn.completed_job_stats(uuid))
                found = conn.find_domain(uuid=uuid)
                if paused_outside and found is not None and found.state == "running":
                    # libvirt resumes the VM on arrival; someone had paused it.
                    conn.suspend(uuid)
                    found = conn.find_domain(uuid=uuid)
                    notes.append(
                        f"paused again on {migration.destination.name}: someone paused it "
                        "during the migration"
                    )
                seen["destination"] = found
        except gateway.GatewayError as exc:
            logger.warning("migration %s: no completed statistics: %s", migration.pk, exc)

    def read_source() -> None:
        try:
            with open_source() as conn:
                seen["source"] = conn.find_domain(uuid=uuid)
        except gateway.GatewayError as exc:
            logger.info("migration %s: source not read after completion: %s", migration.pk, exc)

    reader = concurrency.start(read_source, name=f"complete-{migration.pk}")
    read_destination()
    # Past this bound the source's row is left to the inventory sync.
    reader.wait(gateway.keepalive_bound_s() + settings.LIBVIRT_CONNECT_TIMEOUT_S)
    seen = dict(seen)
    lease.check()
    db_retry("final sample", lambda: _record_final_sample(migration, stats))
    actor = system_actor(lease.owner)

    def vm_rows(current: Migration) -> None:
        synced_at = timezone.now()
        for side, host in (("source", current.source), ("destination", current.destination)):
            if side in seen:
                vm_sync_one(host=host, uuid=uuid, info=seen[side], synced_at=synced_at, actor=actor)

    migration = lease.change(
        migration,
        MigrationStatus.SUCCEEDED,
        EventType.MIGRATION_SUCCEEDED,
        also=vm_rows,
        phase=Phase.DONE,
        percent=100.0,
        eta_s=0,
        data_remaining_bytes=0 if migration.data_remaining_bytes is not None else None,
        needs_cleanup=False,
        **({"error": "; ".join(notes)} if notes else {}),
        **completed_fields(stats),
    )
    # Its slots are free from `succeeded` on: the next queued migration (an evacuation's
    # next VM) starts now, not after this worker's inventory refresh.
    dispatch_after_commit()
    # After `succeeded`, so the full sync of both hosts does not delay it.
    refresh_inventory(migration, lease, reuse=True)
    return migration


def _record_final_sample(migration: Migration, stats: dict) -> Migration:
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


def refresh_inventory(migration: Migration, lease: Lease, *, reuse: bool = False) -> None:
    actor = system_actor(lease.owner)
    for host in (migration.source, migration.destination):
        try:
            host_refresh(host=host, actor=actor, reuse=reuse)
        except DatabaseError as exc:  # the record matters more than the inventory
            logger.warning("migration %s: inventory refresh: %s", migration.pk, exc)
            connection.close()
