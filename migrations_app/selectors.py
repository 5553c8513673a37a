"""Reading migrations: who sees which, and which ones a report covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone

from migrations_app.filters import MigrationReportFilterSet
from migrations_app.models import Migration, MigrationBatch

REPORT_DEFAULT_DAYS = 30


def migrations_visible_to(user: AbstractBaseUser) -> QuerySet[Migration]:
    """Administrators see every migration; other users the ones they requested."""
    queryset = Migration.objects.select_related("source", "destination")
    if not user.is_authenticated:
        return queryset.none()
    if user.is_staff:
        return queryset
    return queryset.filter(requested_by=user)


def batches_visible_to(user: AbstractBaseUser) -> QuerySet[MigrationBatch]:
    """Administrators see every batch; other users the ones they requested."""
    queryset = MigrationBatch.objects.select_related("host")
    if not user.is_authenticated:
        return queryset.none()
    if user.is_staff:
        return queryset
    return queryset.filter(created_by=user)


def _valid(filterset) -> QuerySet:
    if not filterset.is_valid():
        raise ValidationError(
            {field: [str(e) for e in errors] for field, errors in filterset.errors.items()}
        )
    return filterset.qs


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
    _valid(probe)  # bad values raise here, before the defaults are worked out
    until = probe.form.cleaned_data.get("until") or (now or timezone.now())
    since = probe.form.cleaned_data.get("since") or until - timedelta(days=REPORT_DEFAULT_DAYS)
    if since >= until:
        raise ValidationError({"since": ["The start of the range must be before its end."]})
    data["since"], data["until"] = since.isoformat(), until.isoformat()
    queryset = _valid(MigrationReportFilterSet(data, queryset=Migration.objects.all()))
    filters = {
        key: (params.getlist(key) if key == "outcome" else params.get(key))
        for key in MigrationReportFilterSet.base_filters
        if key not in ("since", "until") and params.get(key) not in (None, "")
    }
    return queryset, ReportScope(since=since, until=until, filters=filters)
