"""API token authentication remembering valid tokens per process for TOKEN_CACHE_S (a
query saved per request). A deleted token may work that long on another process;
permissions are not remembered (each request gets its own copy of the user).
"""

from __future__ import annotations

import copy
import os
import threading
import time

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

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
    def authenticate_credentials(self, key: str):
        now = time.monotonic()
        with _lock:
            entry = _valid.get(key)
        if entry is not None and entry[0] > now:
            _expires, user, token = entry
            return copy.copy(user), token
        user, token = super().authenticate_credentials(key)
        if TOKEN_CACHE_S > 0:
            with _lock:
                if len(_valid) >= _MAX_ENTRIES:
                    for stale in [k for k, v in _valid.items() if v[0] <= now] or list(_valid):
                        del _valid[stale]
                _valid[key] = (now + TOKEN_CACHE_S, copy.copy(user), token)
        return user, token


@receiver([post_save, post_delete], sender=Token, dispatch_uid="portal_token_forget")
def _forget_token(sender, instance: Token, **kwargs) -> None:
    tokens_forget(instance.key)


@receiver(
    [post_save, post_delete], sender=settings.AUTH_USER_MODEL, dispatch_uid="portal_token_user"
)
def _forget_user_tokens(sender, instance, **kwargs) -> None:
    # A user changed (deactivated, password reset): forget their tokens.
    with _lock:
        for key in [k for k, v in _valid.items() if v[2].user_id == instance.pk]:
            del _valid[key]
