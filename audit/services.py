"""Writing audit events. Call inside the transaction of the change being recorded."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from audit.events import EventType
from audit.models import AuditEvent

# A client-supplied X-Request-ID is kept only if it looks like an id.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,64}$")
# Kept in request.META (shared by Django and DRF requests): one id for all of a request.
REQUEST_ID_META_KEY = "portal.request_id"


def request_id_of(request) -> str:
    """The request's id: a sane X-Request-ID header, else a new one (once per request)."""
    meta = request.META
    if not meta.get(REQUEST_ID_META_KEY):
        given = meta.get("HTTP_X_REQUEST_ID", "")
        meta[REQUEST_ID_META_KEY] = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    return meta[REQUEST_ID_META_KEY]


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
    def from_request(cls, request, *, auth_method: str | None = None) -> Actor:
        user = request.user if request.user.is_authenticated else None
        if auth_method is None:
            auth = getattr(request, "auth", None)
            auth_method = "token" if auth is not None and hasattr(auth, "key") else "session"
        return cls(
            user=user,
            name=user.get_username() if user else "anonymous",
            source_ip=request.META.get("REMOTE_ADDR") or None,
            auth_method=auth_method,
            request_id=request_id_of(request),
        )


def _subject_columns(target: models.Model | None, detail: dict) -> dict:
    columns: dict = {"host_name": "", "peer_host_name": "", "vm_uuid": None, "vm_name": ""}
    label = target._meta.label_lower if target is not None else ""
    if label == "hosts.host":
        columns["host_name"] = target.name
    elif label == "vms.vm":
        columns.update(vm_uuid=target.uuid, vm_name=target.name, host_name=target.host.name)
    if detail.get("source"):
        columns["host_name"] = str(detail["source"])
    if detail.get("destination"):
        columns["peer_host_name"] = str(detail["destination"])
    if detail.get("vm_name"):
        columns["vm_name"] = str(detail["vm_name"])
    if detail.get("vm_uuid"):
        try:
            columns["vm_uuid"] = uuid.UUID(str(detail["vm_uuid"]))
        except ValueError:
            pass
    columns["host_name"] = columns["host_name"][:64]
    columns["peer_host_name"] = columns["peer_host_name"][:64]
    columns["vm_name"] = columns["vm_name"][:255]
    return columns


def audit_event_record(
    *,
    actor: Actor,
    event_type: EventType,
    target: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    detail: dict | None = None,
) -> AuditEvent:
    detail = detail or {}
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
        detail=detail,
        **_subject_columns(target, detail),
    )


def audit_auth_event_record(
    *,
    request,
    event_type: EventType,
    username: str,
    account: AbstractBaseUser | None = None,
    succeeded: bool = True,
    detail: dict | None = None,
) -> AuditEvent:
    """A login, logout or failed login (actor_name: the name tried); never the password."""
    ip = request.META.get("REMOTE_ADDR") if request is not None else None
    return AuditEvent.objects.create(
        event_type=event_type,
        actor=account if succeeded else None,
        actor_name=username[:150],
        source_ip=ip or None,
        auth_method="session" if event_type == EventType.AUTH_LOGOUT else "password",
        request_id=request_id_of(request) if request is not None else uuid.uuid4().hex,
        target_type=settings.AUTH_USER_MODEL.lower(),
        target_id=str(account.pk) if account is not None else "",
        target_repr=username[:255],
        detail=detail or {},
    )
