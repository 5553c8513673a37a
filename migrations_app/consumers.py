"""The live progress sockets: /ws/migrations/{id}/ and /ws/migration-batches/{id}/."""

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


class _ProgressConsumer(AsyncJsonWebsocketConsumer):
    """The current state first, then every update in order; closed after the final state."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        # Join before reading the state: no update can fall between the two.
        self.group = self._group(self.scope["url_route"]["kwargs"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await self._snapshot(user)
        if snapshot is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=CLOSE_NOT_VISIBLE)
            return
        await self.accept()
        await self._send_state({"event": "snapshot", **snapshot})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _send_state(self, message: dict) -> None:
        await self.send_json(message)
        if self._final(message):
            await self.close()


class MigrationProgressConsumer(_ProgressConsumer):
    def _group(self, kwargs: dict) -> str:
        self.migration_id = int(kwargs["migration_id"])
        return migration_group(self.migration_id)

    def _final(self, message: dict) -> bool:
        return message["migration"]["status"] in FINAL_STATUSES

    async def migration_update(self, event: dict) -> None:
        await self._send_state(
            {"event": event["event"], "migration": event["migration"], "sample": event["sample"]}
        )

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


class BatchProgressConsumer(_ProgressConsumer):
    """The batch (children and progress), read again after every change of it or a child."""

    def _group(self, kwargs: dict) -> str:
        self.batch_id = int(kwargs["batch_id"])
        return batch_group(self.batch_id)

    def _final(self, message: dict) -> bool:
        return message["batch"]["status"] in BATCH_FINAL_STATUSES

    async def batch_update(self, event: dict) -> None:
        # Read here, one event at a time, so each batch sent is at least as new as the last.
        snapshot = await self._snapshot(self.scope["user"])
        if snapshot is None:  # deleted, or no longer visible to this user
            await self.close(code=CLOSE_NOT_VISIBLE)
            return
        await self._send_state({"event": event["event"], **snapshot})

    @database_sync_to_async
    def _snapshot(self, user) -> dict | None:
        batch = batches_visible_to(user).filter(pk=self.batch_id).first()
        return {"batch": MigrationBatchSerializer(batch).data} if batch is not None else None
