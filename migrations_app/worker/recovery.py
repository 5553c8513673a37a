"""Recovering a post-copy migration that a broken link paused: the worker runs libvirt's
call again with VIR_MIGRATE_POSTCOPY_RESUME under the claim a person's resolve handed
it, monitors it like the first run, then completes or settles as usual."""

from __future__ import annotations

import logging

from core.publish import publish_flush
from migrations_app.models import Migration, MigrationStatus
from migrations_app.scheduling.dispatch import migrations_dispatch_waiting
from migrations_app.transitions import ClaimLost
from migrations_app.worker.completion import migration_complete
from migrations_app.worker.lease import Lease, heartbeat, worker_identity
from migrations_app.worker.runner import _migrate_and_monitor
from migrations_app.worker.settlement import migration_settle

logger = logging.getLogger(__name__)


def postcopy_resume_execute(*, migration_id: int, epoch: int, worker: str | None = None) -> str:
    """Resume the post-copy of `migration_id` under claim `epoch` (set by the resolve);
    a claim taken over meanwhile (the reconciler found it stale) does nothing."""
    worker = worker or worker_identity()
    lease = Lease(migration_id, epoch, worker)
    taken = Migration.objects.filter(
        pk=migration_id, claim_epoch=epoch, status=MigrationStatus.MIGRATING
    ).update(claimed_by=worker)
    if not taken:
        logger.warning("migration %s: post-copy resume no longer this claim's", migration_id)
        return Migration.objects.get(pk=migration_id).status
    migration = Migration.objects.select_related("source", "destination").get(pk=migration_id)
    try:
        with heartbeat(lease):
            cause, error = _migrate_and_monitor(migration, lease, postcopy_resume=True)
            if error is None:
                return migration_complete(migration, lease).status
            return migration_settle(
                migration, lease, error, why="resuming the post-copy failed: ", cause=cause
            ).status
    except ClaimLost:
        logger.warning("migration %s: this worker lost its claim and stopped", migration_id)
        return Migration.objects.get(pk=migration_id).status
    finally:
        migrations_dispatch_waiting()
        publish_flush()
