"""Websockets for scripts: a handshake that carries `Authorization: Bearer <token>` (or
`Token <token>`) is authenticated like an API request (named tokens with their expiry,
networks and revocation; the older plain keys). Without that header the session cookie
decides, as for the pages."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions

from portal.authentication import CachedTokenAuthentication


class _Handshake:
    """What CachedTokenAuthentication reads of a request, taken from the ASGI scope."""

    method = "GET"  # a websocket only reads: a read-only token may follow progress

    def __init__(self, scope: dict, authorization: bytes) -> None:
        client = scope.get("client") or (None, None)
        self.META = {"HTTP_AUTHORIZATION": authorization, "REMOTE_ADDR": client[0]}


@database_sync_to_async
def _token_user(scope: dict, authorization: bytes):
    try:
        found = CachedTokenAuthentication().authenticate(_Handshake(scope, authorization))
    except (exceptions.AuthenticationFailed, exceptions.PermissionDenied):
        return AnonymousUser()
    return found[0] if found else AnonymousUser()


class TokenOrSessionAuthMiddleware:
    def __init__(self, inner) -> None:
        self._session = AuthMiddlewareStack(inner)
        self._inner = inner

    async def __call__(self, scope, receive, send):
        authorization = dict(scope.get("headers") or []).get(b"authorization")
        if not authorization:
            return await self._session(scope, receive, send)
        scope = dict(scope, user=await _token_user(scope, authorization))
        return await self._inner(scope, receive, send)
