"""Query-string filters every app's API and pages use."""

from __future__ import annotations

import uuid

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def filtered(filterset: django_filters.FilterSet) -> QuerySet:
    """The FilterSet's queryset; its errors, by parameter, raised as a ValidationError."""
    if not filterset.is_valid():
        raise ValidationError(
            {field: [str(e) for e in errors] for field, errors in filterset.errors.items()}
        )
    return filterset.qs


class _StrictBooleanField(forms.NullBooleanField):
    """true/false (or empty: no filter); anything else is a 400 naming the parameter,
    where django-filter's own boolean quietly ignores it."""

    widget = forms.TextInput

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value in (True, "true", "True", "1"):
            return True
        if value in (False, "false", "False", "0"):
            return False
        raise ValidationError("Not a boolean: true or false.", code="invalid")


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = _StrictBooleanField


class ListFilterBackend(DjangoFilterBackend):
    """django-filter's backend (REST_FRAMEWORK["DEFAULT_FILTER_BACKENDS"]) for lists only:
    a detail URL is its object whatever the query string (the schema lists the filters
    on the list only). Without a query string it builds no FilterSet (deep copies of its
    filters and form fields, per request), which would give the queryset back as it is."""

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", "list") not in ("list", None) or not request.query_params:
            return queryset
        return super().filter_queryset(request, queryset, view)
