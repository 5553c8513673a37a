"""/ws/inventory/: every change a host's listener saw, as it is applied."""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from listeners.services import INVENTORY_GROUP

CLOSE_UNAUTHENTICATED = 4401


class InventoryConsumer(AsyncJsonWebsocketConsumer):
    """Sends {"event", "host", "host_id", "vm": {uuid, name, state, state_reason,
    state_label}} for each VM change; the pages update their rows from it."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        await self.channel_layer.group_add(INVENTORY_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(INVENTORY_GROUP, self.channel_name)

    async def inventory_vm(self, event: dict) -> None:
        await self.send_json({key: value for key, value in event.items() if key != "type"})
