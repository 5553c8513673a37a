"""Websocket routes of every app."""

from django.urls import path

from migrations_app.consumers import MigrationProgressConsumer

websocket_urlpatterns = [
    path("ws/migrations/<int:migration_id>/", MigrationProgressConsumer.as_asgi()),
]
