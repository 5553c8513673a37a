"""The API's filter backend (REST_FRAMEWORK["DEFAULT_FILTER_BACKENDS"])."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend


class ListFilterBackend(DjangoFilterBackend):
    """django-filter's backend for lists only (REST_FRAMEWORK["DEFAULT_FILTER_BACKENDS"]).
    DRF's get_object filters the queryset too, so `/api/migrations/5/?status=failed` was
    a 404 for a running migration 5: a filter the schema does not list for a detail URL.
    A detail URL is the object, whatever the query string."""

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", "list") not in ("list", None):
            return queryset
        return super().filter_queryset(request, queryset, view)
