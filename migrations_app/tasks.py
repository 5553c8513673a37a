"""django-q2 entry points: take ids, call the worker."""

from migrations_app.webhooks import webhook_delivery_send
from migrations_app.worker.reconciler import migrations_reconcile
from migrations_app.worker.recovery import postcopy_resume_execute
from migrations_app.worker.runner import migration_execute


def migration_run(migration_id: int) -> str:
    return migration_execute(migration_id=migration_id)


def migration_postcopy_resume(migration_id: int, epoch: int) -> str:
    """Enqueued by a person's resolve (migrations_app.attention) under the claim it took."""
    return postcopy_resume_execute(migration_id=migration_id, epoch=epoch)


def reconcile_migrations() -> list[int]:
    """Scheduled every minute (migration migrations_app/0002) and run at worker start."""
    return migrations_reconcile()


def webhook_deliver(delivery_id: int) -> str:
    """Enqueued after the commit that recorded the delivery; retries are the reconciler's."""
    return webhook_delivery_send(delivery_id=delivery_id)
