"""Creating, revoking and checking API tokens; creation and revocation are audited."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from tokens import rules
from tokens.models import ApiToken

# last_used_at is written at most this often per token (not once per request).
LAST_USED_EVERY = timedelta(seconds=60)


class TokenRefused(Exception):
    """The token exists but may not be used now (revoked, expired, wrong network)."""


def _hash(secret: str) -> str:
    # 256 random bits: a plain hash cannot be reversed by guessing.
    return hashlib.sha256(secret.encode()).hexdigest()


def token_view(token: ApiToken) -> dict:
    """What the audit log keeps of a token (never its secret)."""
    return {
        "name": token.name,
        "key_id": token.key_id,
        "token_of": token.user.get_username(),
        "write_enabled": token.write_enabled,
        "allowed_networks": token.allowed_networks,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


@transaction.atomic
def token_create(
    *,
    user,
    name: str,
    actor: Actor,
    write_enabled: bool = False,
    expires_at: datetime | None = None,
    allowed_networks: list[str] | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its full text, which is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        key_id=key_id,
        secret_hash=_hash(secret),
        write_enabled=write_enabled,
        expires_at=expires_at,
        allowed_networks=list(allowed_networks or []),
    )
    audit_event_record(
        actor=actor, event_type=EventType.TOKEN_CREATED, target=user, after=token_view(token)
    )
    return token, f"{rules.PREFIX}{key_id}.{secret}"


@transaction.atomic
def token_revoke(*, token: ApiToken, actor: Actor) -> ApiToken:
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        return token
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    audit_event_record(
        actor=actor, event_type=EventType.TOKEN_DELETED, target=token.user, before=token_view(token)
    )
    return token


def token_check(*, raw: str, client_ip: str | None) -> ApiToken | None:
    """The token `raw` names if its secret matches (None: not one of ours, or wrong);
    raises TokenRefused if it may not be used now. Records its use."""
    parsed = rules.parse(raw)
    if parsed is None:
        return None
    key_id, secret = parsed
    token = ApiToken.objects.select_related("user").filter(key_id=key_id).first()
    if token is None or not hmac.compare_digest(token.secret_hash, _hash(secret)):
        return None
    now = timezone.now()
    why = rules.refusal(
        revoked_at=token.revoked_at,
        expires_at=token.expires_at,
        allowed_networks=token.allowed_networks,
        client_ip=client_ip,
        now=now,
    )
    if why:
        raise TokenRefused(why)
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=client_ip)
        token.last_used_at, token.last_used_ip = now, client_ip
    return token
