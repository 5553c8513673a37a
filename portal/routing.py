"""Websocket routes of every app."""

from django.urls import path

from migrations_app.consumers import BatchProgressConsumer, MigrationProgressConsumer

websocket_urlpatterns = [
    path("ws/migrations/<int:migration_id>/", MigrationProgressConsumer.as_asgi()),
    path("ws/migration-batches/<int:batch_id>/", BatchProgressConsumer.as_asgi()),
]
