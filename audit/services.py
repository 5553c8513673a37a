"""Writing audit events. Call inside the transaction of the change being recorded."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from audit.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who did something: a user through a request, or the system (a worker, a schedule)."""

    user: AbstractBaseUser | None
    name: str
    source_ip: str | None = None
    auth_method: str = "system"
    request_id: str = ""

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(user=None, name=name, request_id=uuid.uuid4().hex)

    @classmethod
    def from_request(cls, request) -> Actor:
        user = request.user if request.user.is_authenticated else None
        auth = getattr(request, "auth", None)
        method = "token" if auth is not None and hasattr(auth, "key") else "session"
        return cls(
            user=user,
            name=user.get_username() if user else "anonymous",
            source_ip=request.META.get("REMOTE_ADDR"),
            auth_method=method,
            request_id=request.META.get("HTTP_X_REQUEST_ID") or uuid.uuid4().hex,
        )


def audit_event_record(
    *,
    actor: Actor,
    event_type: str,
    target: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        event_type=event_type,
        actor=actor.user,
        actor_name=actor.name,
        source_ip=actor.source_ip,
        auth_method=actor.auth_method,
        request_id=actor.request_id,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:255],
        before=before,
        after=after,
        detail=detail or {},
    )
