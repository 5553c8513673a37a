"""Query-string filters of the migration list and of the migration reports."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from core.filters import IdFilter, StrictBooleanFilter, UtcIsoDateTimeFilter, parse_uuid
from migrations_app.domain.lifecycle import ACTIVE_STATUSES, FailureReason, MigrationStatus
from migrations_app.models import Migration


class MigrationFilterSet(django_filters.FilterSet):
    vm = django_filters.CharFilter(method="filter_vm", help_text="VM UUID or name.")
    host = django_filters.CharFilter(
        method="filter_host", help_text="Source or destination host name."
    )
    source = django_filters.CharFilter(field_name="source__name")
    destination = django_filters.CharFilter(field_name="destination__name")
    status = django_filters.MultipleChoiceFilter(choices=MigrationStatus.choices)
    failure_reason = django_filters.MultipleChoiceFilter(
        choices=FailureReason.choices, help_text="Why it failed; repeat for several."
    )
    user = django_filters.CharFilter(field_name="requested_by_name")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    batch = IdFilter(field_name="batch_id", help_text="The batch's id.")
    live = StrictBooleanFilter()

    class Meta:
        model = Migration
        fields = [
            "vm",
            "host",
            "source",
            "destination",
            "status",
            "failure_reason",
            "user",
            "live",
            "batch",
        ]

    def filter_vm(self, queryset, _name, value: str):
        # A UUID or a name; text that only looks like a UUID is a name (no match).
        condition = Q(vm_name=value)
        as_uuid = parse_uuid(value)
        if as_uuid is not None:
            condition |= Q(vm_uuid=as_uuid)
        return queryset.filter(condition)

    def filter_host(self, queryset, _name, value: str):
        return queryset.filter(Q(source__name=value) | Q(destination__name=value))


OUTCOME_ACTIVE = "active"
OUTCOME_CHOICES = [
    (MigrationStatus.SUCCEEDED, "Succeeded"),
    (MigrationStatus.FAILED, "Failed"),
    (MigrationStatus.CANCELLED, "Cancelled"),
    (OUTCOME_ACTIVE, "Queued or running"),
]


class MigrationReportFilterSet(django_filters.FilterSet):
    """Which migrations a report or an export covers (by request time, created_at)."""

    since = UtcIsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="Requested at or after."
    )
    until = UtcIsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="Requested before."
    )
    source = django_filters.CharFilter(field_name="source__name", help_text="Source host name.")
    destination = django_filters.CharFilter(
        field_name="destination__name", help_text="Destination host name."
    )
    host = django_filters.CharFilter(method="filter_host", help_text="Source or destination.")
    vm = django_filters.CharFilter(method="filter_vm", help_text="VM UUID or name.")
    user = django_filters.CharFilter(field_name="requested_by_name", help_text="Who requested.")
    outcome = django_filters.MultipleChoiceFilter(
        method="filter_outcome", choices=OUTCOME_CHOICES, help_text="Repeat for several."
    )
    live = django_filters.TypedChoiceFilter(
        choices=[("true", "Live"), ("false", "Offline")],
        coerce=lambda value: value == "true",
        help_text="true: live migrations; false: offline ones.",
    )

    class Meta:
        model = Migration
        fields = ["since", "until", "source", "destination", "host", "vm", "user", "outcome"]

    def filter_host(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        return queryset.filter(Q(source__name=value) | Q(destination__name=value))

    def filter_vm(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        as_uuid = parse_uuid(value)
        if as_uuid is not None:
            return queryset.filter(vm_uuid=as_uuid)
        return queryset.filter(vm_name=value)

    def filter_outcome(self, queryset: QuerySet, _name: str, value: list[str]) -> QuerySet:
        if not value:
            return queryset
        statuses = [v for v in value if v != OUTCOME_ACTIVE]
        if OUTCOME_ACTIVE in value:
            statuses += list(ACTIVE_STATUSES)
        return queryset.filter(status__in=statuses)
