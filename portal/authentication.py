"""API token authentication: the named tokens (`tokens` app: "mig_<id>.<secret>", hashed,
expiring, read-only or read-write, limited to networks) and the older plain keys, which
keep working until replaced. Either header keyword works: `Token` or `Bearer`.

Valid tokens are remembered per process for TOKEN_CACHE_S (a query saved per request);
a deleted or revoked token may work that long on another process. Expiry, networks and
read-only are checked on every request; permissions are not remembered (each request
gets its own copy of the user).
"""

from __future__ import annotations

import copy
import os
import threading
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token

from tokens import rules
from tokens.models import ApiToken
from tokens.services import TokenRefused, token_check

TOKEN_CACHE_S = float(os.environ.get("PORTAL_API_TOKEN_CACHE_S", "5"))
_MAX_ENTRIES = 1024

_lock = threading.Lock()
_valid: dict[str, tuple[float, object, Token]] = {}  # key -> (expires, user, token)


def tokens_forget(key: str | None = None) -> None:
    with _lock:
        if key is None:
            _valid.clear()
        else:
            _valid.pop(key, None)


class CachedTokenAuthentication(TokenAuthentication):
    KEYWORDS = (b"token", b"bearer")

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() not in self.KEYWORDS:
            return None
        if len(auth) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: give one token.")
        try:
            raw = auth[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid token header.") from exc
        if rules.parse(raw) is None:
            return self.authenticate_credentials(raw)  # an older plain key
        user, token = self._named_token(raw, request.META.get("REMOTE_ADDR"))
        if rules.write_refused(write_enabled=token.write_enabled, method=request.method):
            raise exceptions.PermissionDenied(
                f"The token {token.name!r} is read-only: it may not {request.method}. "
                "Create a read-write token for changes."
            )
        return user, token

    def _named_token(self, raw: str, client_ip: str | None):
        now = time.monotonic()
        with _lock:
            entry = _valid.get(raw)
        if entry is not None and entry[0] > now:
            _expires, user, token = entry
            why = rules.refusal(
                revoked_at=token.revoked_at,
                expires_at=token.expires_at,
                allowed_networks=token.allowed_networks,
                client_ip=client_ip,
                now=timezone.now(),
            )
            if why:
                raise exceptions.AuthenticationFailed(why)
            return copy.copy(user), token
        try:
            token = token_check(raw=raw, client_ip=client_ip)
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        self._remember(raw, token.user, token)
        return token.user, token

    def _remember(self, key: str, user, token) -> None:
        if TOKEN_CACHE_S <= 0:
            return
        now = time.monotonic()
        with _lock:
            if len(_valid) >= _MAX_ENTRIES:
                for stale in [k for k, v in _valid.items() if v[0] <= now] or list(_valid):
                    del _valid[stale]
            _valid[key] = (now + TOKEN_CACHE_S, copy.copy(user), token)

    def authenticate_credentials(self, key: str):
        now = time.monotonic()
        with _lock:
            entry = _valid.get(key)
        if entry is not None and entry[0] > now:
            _expires, user, token = entry
            return copy.copy(user), token
        user, token = super().authenticate_credentials(key)
        self._remember(key, user, token)
        return user, token


@receiver([post_save, post_delete], sender=Token, dispatch_uid="portal_token_forget")
def _forget_token(sender, instance: Token, **kwargs) -> None:
    tokens_forget(instance.key)


@receiver([post_save, post_delete], sender=ApiToken, dispatch_uid="portal_api_token_forget")
def _forget_api_token(sender, instance: ApiToken, **kwargs) -> None:
    with _lock:
        for key in [k for k in _valid if k.startswith(f"{rules.PREFIX}{instance.key_id}.")]:
            del _valid[key]


@receiver(
    [post_save, post_delete], sender=settings.AUTH_USER_MODEL, dispatch_uid="portal_token_user"
)
def _forget_user_tokens(sender, instance, **kwargs) -> None:
    # A user changed (deactivated, password reset): forget their tokens.
    with _lock:
        for key in [k for k, v in _valid.items() if v[2].user_id == instance.pk]:
            del _valid[key]
