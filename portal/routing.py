"""Websocket routes of every app (the migration progress socket joins here)."""

websocket_urlpatterns: list = []
