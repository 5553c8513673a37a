"""Telling browsers about migrations: always after the change committed."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from migrations_app.models import Migration

logger = logging.getLogger(__name__)


def migration_group(migration_id: int) -> str:
    return f"migration-{migration_id}"


def migration_publish(*, migration: Migration, event: str, sample: dict | None = None) -> None:
    """Send the migration's state (and the new sample, if any) to its channel group
    once the surrounding transaction commits; nobody hears of a change that rolled back."""
    from migrations_app.api.serializers import MigrationSerializer

    message = {
        "type": "migration.update",
        "event": event,
        "migration": MigrationSerializer(migration).data,
        "sample": sample,
    }
    group = migration_group(migration.pk)

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(group, message)
        except Exception:  # a dead channel layer must not fail a migration
            logger.exception("publishing %s of migration %s failed", event, migration.pk)

    transaction.on_commit(send)
    if migration.batch_id is not None:  # its batch's page follows its children
        batch_publish(batch_id=migration.batch_id, event=f"child.{event}")


def batch_group(batch_id: int) -> str:
    return f"migration-batch-{batch_id}"


def batch_publish(*, batch_id: int, event: str) -> None:
    """Send the batch's state (its children and progress, read after the commit) to
    its channel group once the surrounding transaction commits."""

    def send() -> None:
        from migrations_app.api.serializers import MigrationBatchSerializer
        from migrations_app.models import MigrationBatch

        try:
            batch = MigrationBatch.objects.filter(pk=batch_id).first()
            if batch is None:
                return
            message = {
                "type": "batch.update",
                "event": event,
                "batch": MigrationBatchSerializer(batch).data,
            }
            async_to_sync(get_channel_layer().group_send)(batch_group(batch_id), message)
        except Exception:  # a dead channel layer must not fail a migration
            logger.exception("publishing %s of migration batch %s failed", event, batch_id)

    transaction.on_commit(send)
