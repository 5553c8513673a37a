import django_filters
from django.db.models import Q

from core.filters import StrictBooleanFilter, parse_id
from vms.models import VM, VMState


class VMFilterSet(django_filters.FilterSet):
    host = django_filters.CharFilter(method="filter_host", help_text="Host name or id.")
    state = django_filters.ChoiceFilter(choices=VMState.choices)
    search = django_filters.CharFilter(
        method="filter_search", help_text="Part of the VM name, or the start of its UUID."
    )

    persistent = StrictBooleanFilter()

    class Meta:
        model = VM
        fields = ["host", "state", "search", "persistent", "arch"]

    def filter_host(self, queryset, _name, value: str):
        condition = Q(host__name=value)
        host_id = parse_id(value)
        if host_id is not None:
            condition |= Q(host_id=host_id)
        return queryset.filter(condition)

    def filter_search(self, queryset, _name, value: str):
        value = value.strip()
        condition = Q(name__icontains=value)
        if value and all(c in "0123456789abcdefABCDEF-" for c in value):
            # Stored without dashes on SQLite, as uuid on PostgreSQL: compare canonical text.
            condition |= Q(uuid__istartswith=value)
        return queryset.filter(condition)
