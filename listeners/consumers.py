"""/ws/inventory/: every change a host's listener saw, as it is applied."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from hosts.selectors import host_groups_visible
from listeners.services import INVENTORY_GROUP, inventory_group_of

CLOSE_UNAUTHENTICATED = 4401


class InventoryConsumer(AsyncJsonWebsocketConsumer):
    """Sends {"event", "host", "host_id", "vm": {uuid, name, state, state_reason,
    state_label}} for each VM change; the pages update their rows from it. Only of the
    host groups the user sees (as of when the socket opened)."""

    channel_groups: list[str] = []

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        visible = await database_sync_to_async(host_groups_visible)(user)
        self.channel_groups = (
            [INVENTORY_GROUP] if visible is None else [inventory_group_of(g) for g in visible]
        )
        for channel_group in self.channel_groups:
            await self.channel_layer.group_add(channel_group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for channel_group in self.channel_groups:
            await self.channel_layer.group_discard(channel_group, self.channel_name)

    async def inventory_vm(self, event: dict) -> None:
        await self.send_json({key: value for key, value in event.items() if key != "type"})
