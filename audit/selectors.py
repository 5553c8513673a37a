"""Reading the audit log."""

from __future__ import annotations

import base64
import binascii
import heapq
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils.dateparse import parse_datetime

from audit.filters import AuditEventFilterSet
from audit.models import AuditEvent
from core.filters import filtered, parse_id

AUDIT_PAGE_SIZE = 50
AUDIT_MAX_PAGE_SIZE = 500
_NOT_FILTERS = ("cursor", "page_size", "format")


def audit_events_filtered(*, params: QueryDict) -> QuerySet[AuditEvent]:
    """Events matching the filters, newest first (ValidationError on a bad one)."""
    queryset = AuditEvent.objects.order_by("-occurred_at", "-id")
    if not params:
        return queryset  # the FilterSet (deep copies per request) would change nothing
    return filtered(AuditEventFilterSet(params, queryset=queryset))


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None


def _cursor_encode(event: AuditEvent) -> str:
    raw = f"{event.occurred_at.isoformat()}|{event.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, pk = raw.split("|")
        parsed = parse_datetime(when)
        if parsed is None:
            raise ValueError(when)
        parsed = parsed.astimezone(UTC)  # as core.filters.UtcIsoDateTimeFilter: PostgreSQL
        number = parse_id(pk)
        if number is None:
            raise ValueError(pk)
        return parsed, number
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error) as exc:
        raise ValidationError({"cursor": ["Not a valid page cursor."]}) from exc


def _page_size(value: str | None) -> int:
    if not value:
        return AUDIT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= AUDIT_MAX_PAGE_SIZE:
        raise ValidationError({"page_size": [f"A number from 1 to {AUDIT_MAX_PAGE_SIZE}."]})
    return size


def _host_name(value: str | None) -> str:
    """The `host` filter, read here instead of by the FilterSet, checked as it would be
    (a NUL is refused by name; PostgreSQL would refuse the query with a 500)."""
    if not value:
        return ""
    try:
        return AuditEventFilterSet.base_filters["host"].field.clean(value)
    except ValidationError as exc:
        raise ValidationError({"host": exc.messages}) from exc


def audit_events_page(*, params: QueryDict) -> AuditPage:
    """One page of the log, newest first, by keyset (one index range a page, no COUNT); a
    host in two range reads merged here (an OR would sort every event of the host)."""
    size = _page_size(params.get("page_size"))
    filters = params.copy()
    for key in (*_NOT_FILTERS, "host"):
        filters.pop(key, None)
    queryset = audit_events_filtered(params=filters)
    if params.get("cursor"):
        when, pk = _cursor_decode(params["cursor"])
        # (occurred_at, id) < (when, pk), written so that it is an index range.
        queryset = queryset.filter(occurred_at__lte=when).exclude(occurred_at=when, id__gte=pk)
    host = _host_name(params.get("host"))
    parts = [queryset.filter(host_name=host), queryset.filter(peer_host_name=host)]
    if not host:
        parts = [queryset]
    events = heapq.merge(
        *(list(part[: size + 1]) for part in parts),
        key=lambda e: (e.occurred_at, e.pk),
        reverse=True,
    )
    page = list({e.pk: e for e in events}.values())[: size + 1]
    more = len(page) > size
    page = page[:size]
    return AuditPage(events=page, next_cursor=_cursor_encode(page[-1]) if more else None)
