"""Reading the audit log and choosing the migrations a report covers."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.filters import AuditEventFilterSet, MigrationReportFilterSet
from audit.models import AuditEvent
from migrations_app.models import Migration

REPORT_DEFAULT_DAYS = 30


def _valid(filterset) -> QuerySet:
    if not filterset.is_valid():
        raise ValidationError(
            {field: [str(e) for e in errors] for field, errors in filterset.errors.items()}
        )
    return filterset.qs


def audit_events_filtered(*, params: QueryDict) -> QuerySet[AuditEvent]:
    """Events matching the query-string filters, newest first. Raises ValidationError."""
    queryset = AuditEvent.objects.order_by("-occurred_at", "-id")
    return _valid(AuditEventFilterSet(params, queryset=queryset))


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
        return parsed, int(pk)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise ValidationError({"cursor": ["Not a valid page cursor."]}) from exc


def audit_events_page(
    *, queryset: QuerySet[AuditEvent], cursor: str | None, size: int = 50
) -> AuditPage:
    """One page of `queryset` (newest first) after `cursor`, by keyset: the database reads
    an index range from the cursor on, so page 1,000 costs what page 1 does."""
    if cursor:
        when, pk = _cursor_decode(cursor)
        queryset = queryset.filter(Q(occurred_at__lt=when) | Q(occurred_at=when, id__lt=pk))
    events = list(queryset.order_by("-occurred_at", "-id")[: size + 1])
    more = len(events) > size
    events = events[:size]
    return AuditPage(events=events, next_cursor=_cursor_encode(events[-1]) if more else None)


@dataclass(frozen=True)
class ReportScope:
    since: datetime
    until: datetime
    filters: dict

    def as_dict(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "filters": self.filters,
        }


def migrations_for_report(
    *, params: QueryDict, now: datetime | None = None
) -> tuple[QuerySet[Migration], ReportScope]:
    """The migrations a report or export covers, and the scope it was given.

    Without `until` the range ends now; without `since` it starts REPORT_DEFAULT_DAYS
    before `until`. Raises ValidationError for bad filter values.
    """
    data = params.copy()
    probe = MigrationReportFilterSet(params, queryset=Migration.objects.none())
    if not probe.is_valid():
        _valid(probe)
    until = probe.form.cleaned_data.get("until") or (now or timezone.now())
    since = probe.form.cleaned_data.get("since") or until - timedelta(days=REPORT_DEFAULT_DAYS)
    if since >= until:
        raise ValidationError({"since": ["The start of the range must be before its end."]})
    data["since"], data["until"] = since.isoformat(), until.isoformat()
    queryset = _valid(
        MigrationReportFilterSet(data, queryset=Migration.objects.select_related(None))
    )
    filters = {
        key: (params.getlist(key) if key == "outcome" else params.get(key))
        for key in MigrationReportFilterSet.base_filters
        if key not in ("since", "until") and params.get(key) not in (None, "")
    }
    return queryset, ReportScope(since=since, until=until, filters=filters)
