"""Websocket routes of every app."""

from django.urls import path

from listeners.consumers import InventoryConsumer
from migrations_app.consumers import BatchProgressConsumer, MigrationProgressConsumer

websocket_urlpatterns = [
    path("ws/migrations/<int:migration_id>/", MigrationProgressConsumer.as_asgi()),
    path("ws/migration-batches/<int:batch_id>/", BatchProgressConsumer.as_asgi()),
    path("ws/inventory/", InventoryConsumer.as_asgi()),
]
