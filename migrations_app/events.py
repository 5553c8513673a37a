"""Telling browsers about migrations: always after the change committed."""

from __future__ import annotations

from django.db import transaction

from core.publish import send
from migrations_app.models import Migration
from migrations_app.serializers import MigrationSerializer


def migration_group(migration_id: int) -> str:
    return f"migration-{migration_id}"


def migration_publish(*, migration: Migration, event: str, sample: dict | None = None) -> None:
    """Send the migration's state (and new sample) to its group after commit."""
    message = {
        "type": "migration.update",
        "event": event,
        "migration": MigrationSerializer(migration).data,
        "sample": sample,
    }
    group = migration_group(migration.pk)

    transaction.on_commit(lambda: send(group, message, f"{event} of migration {migration.pk}"))
    if migration.batch_id is not None:  # its batch's page follows its children
        batch_publish(batch_id=migration.batch_id, event=f"child.{event}")


def batch_group(batch_id: int) -> str:
    return f"migration-batch-{batch_id}"


def batch_publish(*, batch_id: int, event: str) -> None:
    """Tell the batch's group it changed, after commit (no state: subscribers read it)."""
    message = {"type": "batch.update", "event": event}
    transaction.on_commit(
        lambda: send(batch_group(batch_id), message, f"{event} of migration batch {batch_id}")
    )
