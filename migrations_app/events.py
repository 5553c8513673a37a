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
