"""Query-string filters of the audit log (API and page)."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from audit.models import AuditEvent
from core.filters import UtcIsoDateTimeFilter, parse_uuid


class IPAddressFilter(django_filters.CharFilter):
    """Validated: PostgreSQL's inet column would answer anything else with a 500."""

    field_class = forms.GenericIPAddressField


class AuditEventFilterSet(django_filters.FilterSet):
    since = UtcIsoDateTimeFilter(
        field_name="occurred_at", lookup_expr="gte", help_text="From this time (inclusive)."
    )
    until = UtcIsoDateTimeFilter(
        field_name="occurred_at", lookup_expr="lt", help_text="Up to this time (exclusive)."
    )
    actor = django_filters.CharFilter(field_name="actor_name", help_text="User name.")
    event_type = django_filters.CharFilter(
        method="filter_event_type",
        help_text="Event types, comma-separated; 'migration.*' for every migration event.",
    )
    host = django_filters.CharFilter(
        method="filter_host", help_text="Host name (a migration's source or destination)."
    )
    vm = django_filters.CharFilter(method="filter_vm", help_text="VM UUID or name.")
    target_type = django_filters.CharFilter(help_text="e.g. hosts.host, migrations_app.migration")
    target_id = django_filters.CharFilter()
    request_id = django_filters.CharFilter()
    source_ip = IPAddressFilter(help_text="The client's IPv4 or IPv6 address.")

    class Meta:
        model = AuditEvent
        fields = ["since", "until", "actor", "event_type", "host", "vm"]

    def filter_event_type(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        condition = Q()
        for item in (v.strip() for v in value.split(",")):
            if item.endswith("*"):
                condition |= Q(event_type__startswith=item[:-1])
            elif item:
                condition |= Q(event_type=item)
        return queryset.filter(condition)

    def filter_host(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        return queryset.filter(Q(host_name=value) | Q(peer_host_name=value))

    def filter_vm(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        as_uuid = parse_uuid(value)
        return queryset.filter(vm_uuid=as_uuid) if as_uuid else queryset.filter(vm_name=value)
