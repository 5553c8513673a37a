"""The live progress socket of one migration: /ws/migrations/{id}/."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from migrations_app.events import batch_group, migration_group
from migrations_app.models import BATCH_FINAL_STATUSES, FINAL_STATUSES
from migrations_app.selectors import batches_visible_to, migrations_visible_to
from migrations_app.serializers import (
    MigrationBatchSerializer,
    MigrationSampleSerializer,
    MigrationSerializer,
)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_VISIBLE = 4403


class MigrationProgressConsumer(AsyncJsonWebsocketConsumer):
    """Sends the current state first, then every update in order, and closes after the
    final state. Reconnecting simply starts again with the current state."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.migration_id = int(self.scope["url_route"]["kwargs"]["migration_id"])
        # Join before reading the state: no update can fall between the two.
        self.group = migration_group(self.migration_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await self._snapshot(user)
        if snapshot is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_VISIBLE)
            return
        await self.accept()
        await self.send_json({"event": "snapshot", **snapshot})
        if snapshot["migration"]["status"] in FINAL_STATUSES:
            await self.close()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def migration_update(self, event: dict) -> None:
        await self.send_json(
            {"event": event["event"], "migration": event["migration"], "sample": event["sample"]}
        )
        if event["migration"]["status"] in FINAL_STATUSES:
            await self.close()

    @database_sync_to_async
    def _snapshot(self, user) -> dict | None:
        migration = migrations_visible_to(user).filter(pk=self.migration_id).first()
        if migration is None:
            return None
        samples = migration.samples.order_by("-taken_at", "-id")[:600]
        return {
            "migration": MigrationSerializer(migration).data,
            "samples": MigrationSampleSerializer(reversed(samples), many=True).data,
        }


class BatchProgressConsumer(AsyncJsonWebsocketConsumer):
    """/ws/migration-batches/{id}/: the batch (children and progress) first, then its
    state after every change of the batch or one of its children; closed after its
    final state."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.batch_id = int(self.scope["url_route"]["kwargs"]["batch_id"])
        self.group = batch_group(self.batch_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        batch = await self._snapshot(user)
        if batch is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_VISIBLE)
            return
        await self.accept()
        await self.send_json({"event": "snapshot", "batch": batch})
        if batch["status"] in BATCH_FINAL_STATUSES:
            await self.close()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def batch_update(self, event: dict) -> None:
        # Read now, not by the publisher: this consumer handles its events one at a
        # time, so each batch it sends is at least as new as the one before, whichever
        # worker's event came first (events.batch_publish).
        batch = await self._snapshot(self.scope["user"])
        if batch is None:  # deleted, or no longer visible to this user
            await self.close(code=CLOSE_NOT_VISIBLE)
            return
        await self.send_json({"event": event["event"], "batch": batch})
        if batch["status"] in BATCH_FINAL_STATUSES:
            await self.close()

    @database_sync_to_async
    def _snapshot(self, user) -> dict | None:
        batch = batches_visible_to(user).filter(pk=self.batch_id).first()
        return MigrationBatchSerializer(batch).data if batch is not None else None
