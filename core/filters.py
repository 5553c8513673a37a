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
    """true/false (or empty: no filter); anything else is a 400, not quietly ignored."""

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
    """django-filter's backend for lists only, building no FilterSet without a query string
    (a costly deep copy per request that would change nothing)."""

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", "list") not in ("list", None) or not request.query_params:
            return queryset
        return super().filter_queryset(request, queryset, view)
