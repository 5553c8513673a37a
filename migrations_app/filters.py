import django_filters
from django.db.models import Q

from migrations_app.models import Migration, MigrationStatus


class MigrationFilterSet(django_filters.FilterSet):
    vm = django_filters.CharFilter(method="filter_vm", help_text="VM UUID or name.")
    host = django_filters.CharFilter(
        method="filter_host", help_text="Source or destination host name."
    )
    source = django_filters.CharFilter(field_name="source__name")
    destination = django_filters.CharFilter(field_name="destination__name")
    status = django_filters.MultipleChoiceFilter(choices=MigrationStatus.choices)
    user = django_filters.CharFilter(field_name="requested_by_name")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Migration
        fields = ["vm", "host", "source", "destination", "status", "user", "live"]

    def filter_vm(self, queryset, _name, value: str):
        condition = Q(vm_name=value)
        if len(value) >= 32 and all(c in "0123456789abcdefABCDEF-" for c in value):
            condition |= Q(vm_uuid=value)
        return queryset.filter(condition)

    def filter_host(self, queryset, _name, value: str):
        return queryset.filter(Q(source__name=value) | Q(destination__name=value))
