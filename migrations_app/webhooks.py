"""Outgoing webhooks: the end of a migration or a batch, POSTed to subscribed endpoints.

A delivery row is written in the transaction of the final status (a rollback sends
nothing, a commit is never lost). Bodies are signed with the endpoint's secret, stored
encrypted as it must be read back; the host is checked against the allow-list before
every request, and no redirect or proxy is followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.access.credentials import fernet_for
from hosts.networks import AddressRefused, address_refusal, connection_check
from migrations_app.models import (
    Migration,
    MigrationBatch,
    MigrationStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portal-Signature"
EVENT_HEADER = "X-Portal-Event"
DELIVERY_HEADER = "X-Portal-Delivery"
FIRST_RETRY_S = 10.0
RETRY_FACTOR = 3
# A sender holds a delivery this long (next_attempt_at pushed ahead), then the reconciler.
SEND_LEASE_S = 60
DUE_PER_PASS = 100

_MIGRATION_EVENTS = {
    MigrationStatus.SUCCEEDED: WebhookEvent.MIGRATION_SUCCEEDED,
    MigrationStatus.FAILED: WebhookEvent.MIGRATION_FAILED,
    MigrationStatus.CANCELLED: WebhookEvent.MIGRATION_CANCELLED,
}


def retry_delay_s(attempts: int) -> float:
    """Wait after the `attempts`-th failed attempt: 10 s, 30 s, 90 s, 270 s, ..."""
    return FIRST_RETRY_S * RETRY_FACTOR ** max(0, attempts - 1)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _fernet() -> Fernet:
    return fernet_for(b"portal webhook secrets")


def secret_encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def secret_decrypt(token: str) -> str:
    """Raises InvalidToken when SECRET_KEY changed since the secret was stored."""
    return _fernet().decrypt(token.encode()).decode()


def url_refusal(url: str) -> str | None:
    """Why a webhook URL is refused (no DNS lookup), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Only http:// and https:// URLs with a host name or address."
    if parts.username or parts.password:
        return "No user or password in the URL; the body is signed with the secret."
    return address_refusal(parts.hostname)


def webhook_endpoint_create(
    *,
    url: str,
    events: list[str],
    actor: Actor,
    secret: str | None = None,
    active: bool = True,
    description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """Record an endpoint; returns it and its secret (shown only now). ValidationError by field."""
    if refusal := url_refusal(url):
        raise ValidationError({"url": [refusal]})
    unknown = sorted(set(events) - set(WebhookEvent.values))
    if not events or unknown:
        raise ValidationError(
            {"events": [f"Choose from {', '.join(WebhookEvent.values)}; unknown: {unknown}."]}
        )
    secret = secret or secrets.token_urlsafe(32)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            url=url,
            secret_encrypted=secret_encrypt(secret),
            events=sorted(set(events)),
            active=active,
            description=description,
            created_by_name=actor.name,
        )
        audit_event_record(
            actor=actor,
            event_type=EventType.WEBHOOK_CREATED,
            target=endpoint,
            after={"url": url, "events": endpoint.events, "active": active},
        )
    return endpoint, secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    with transaction.atomic():
        audit_event_record(
            actor=actor,
            event_type=EventType.WEBHOOK_DELETED,
            target=endpoint,
            before={"url": endpoint.url, "events": endpoint.events, "active": endpoint.active},
        )
        endpoint.delete()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def migration_payload(migration: Migration) -> dict:
    return {
        "id": migration.pk,
        "status": migration.status,
        "failure_reason": migration.failure_reason,
        "error": migration.error,
        "vm_uuid": str(migration.vm_uuid),
        "vm_name": migration.vm_name,
        "source": migration.source.name,
        "destination": migration.destination.name,
        "batch": migration.batch_id,
        "created_at": _iso(migration.created_at),
        "started_at": _iso(migration.started_at),
        "finished_at": _iso(migration.finished_at),
        "total_time_ms": migration.total_time_ms,
        "downtime_ms": migration.downtime_ms,
        "transferred_bytes": migration.transferred_bytes,
    }


def webhooks_migration_final(*, migration: Migration) -> list[WebhookDelivery]:
    """Record the deliveries of a migration's final status (in its transaction)."""
    event = _MIGRATION_EVENTS.get(migration.status)
    if event is None:
        return []
    return _deliveries_record(event, {"migration": migration_payload(migration)})


def webhooks_batch_finished(*, batch: MigrationBatch, outcomes: dict) -> list[WebhookDelivery]:
    """Record the deliveries of a batch's final status (in its transaction)."""
    payload = {
        "batch": {
            "id": batch.pk,
            "kind": batch.kind,
            "status": batch.status,
            "host": batch.host.name if batch.host_id else None,
            "created_at": _iso(batch.created_at),
            "started_at": _iso(batch.started_at),
            "finished_at": _iso(batch.finished_at),
            "children": outcomes,
        }
    }
    return _deliveries_record(WebhookEvent.BATCH_FINISHED, payload)


def _deliveries_record(event: WebhookEvent, payload: dict) -> list[WebhookDelivery]:
    endpoints = [
        e for e in WebhookEndpoint.objects.filter(active=True) if event.value in (e.events or [])
    ]
    if not endpoints:
        return []
    now = timezone.now()
    body = {"event": event.value, "occurred_at": now.isoformat(), **payload}
    deliveries = [
        WebhookDelivery.objects.create(
            endpoint=endpoint, event=event, payload=body, next_attempt_at=now
        )
        for endpoint in endpoints
    ]
    ids = [d.pk for d in deliveries]
    transaction.on_commit(lambda: [webhook_delivery_enqueue(delivery_id=i) for i in ids])
    return deliveries


def webhook_delivery_enqueue(*, delivery_id: int) -> None:
    """Hand one delivery to the task queue (if the broker is down, the reconciler sends it)."""
    try:
        async_task(
            "migrations_app.tasks.webhook_deliver",
            delivery_id,
            task_name=f"webhook-{delivery_id}",
            q_options={"max_attempts": 1},
        )
    except Exception as exc:
        logger.warning("webhook delivery %s: not enqueued now: %s", delivery_id, exc)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None  # a 3xx is an answer (a failed attempt), never followed


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def _post(delivery: WebhookDelivery, body: bytes, secret: str) -> int:
    """POST the body; the status code. OSError or AddressRefused when nothing answered."""
    parts = urlsplit(delivery.endpoint.url)
    connection_check(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    request = urllib.request.Request(
        delivery.endpoint.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "libvirt-migration-portal",
            SIGNATURE_HEADER: signature(secret, body),
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: str(delivery.pk),
        },
    )
    try:
        with _OPENER.open(request, timeout=settings.WEBHOOK_TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def webhook_delivery_send(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one due delivery (taken by a compare-and-set); returns its status."""
    now = now or timezone.now()
    taken = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + timedelta(seconds=SEND_LEASE_S))
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:  # its endpoint was removed (the deliveries go with it)
        return "gone"
    if not taken:
        return delivery.status
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    code: int | None = None
    error = ""
    try:
        secret = secret_decrypt(delivery.endpoint.secret_encrypted)
        if not delivery.endpoint.active:
            error = "the endpoint was deactivated"
        else:
            code = _post(delivery, body, secret)
            if not 200 <= code < 300:
                error = f"answered HTTP {code}"
    except InvalidToken:
        error = "the endpoint's secret cannot be read (SECRET_KEY changed): re-create it"
    except AddressRefused as exc:
        error = f"refused, not contacted: {exc}"
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return _attempt_record(delivery, now=now, code=code, error=error)


def _attempt_record(
    delivery: WebhookDelivery, *, now: datetime, code: int | None, error: str
) -> str:
    attempts = delivery.attempts + 1
    fields: dict = {
        "attempts": attempts,
        "last_attempt_at": timezone.now(),
        "last_status_code": code,
        "last_error": error,
    }
    if not error:
        fields.update(status=WebhookDeliveryStatus.DELIVERED, delivered_at=timezone.now())
        fields["next_attempt_at"] = None
    elif attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=WebhookDeliveryStatus.FAILED, next_attempt_at=None)
    else:
        fields["next_attempt_at"] = now + timedelta(seconds=retry_delay_s(attempts))
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    if error:
        logger.warning("webhook delivery %s, attempt %s: %s", delivery.pk, attempts, error)
    return fields.get("status", WebhookDeliveryStatus.PENDING)


def webhooks_deliver_due(*, now: datetime | None = None) -> list[int]:
    """Send every pending delivery that is due (lost first attempts, retries); their ids."""
    now = now or timezone.now()
    pending = WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING)
    rows = pending.filter(next_attempt_at__lte=now).order_by("next_attempt_at", "id")
    due = list(rows.values_list("pk", flat=True)[:DUE_PER_PASS])
    for delivery_id in due:
        webhook_delivery_send(delivery_id=delivery_id, now=now)
    return due
