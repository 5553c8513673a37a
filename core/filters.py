"""Query-string filters every app's API and pages use."""

from __future__ import annotations

import uuid
from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

# Row ids are 64-bit signed integers (BigAutoField; SQLite's INTEGER): a larger number in a
# query would overflow in the database driver (a 500), so it is refused or matches nothing.
DB_ID_MAX = 2**63 - 1


def parse_id(value: str) -> int | None:
    """A row id written in decimal digits, within the database's range; else None."""
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    number = int(value)
    return number if 1 <= number <= DB_ID_MAX else None


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


class _UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601, read into UTC: Python takes offsets up to 23:59, PostgreSQL only up to
    15:59 (`+17:57` was a 500 there); one that leaves years 1-9999 in UTC is a 400."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _UtcIsoDateTimeField


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


@extend_schema_field({"type": "integer", "format": "int64", "minimum": 1, "maximum": DB_ID_MAX})
class IdFilter(django_filters.NumberFilter):
    """A row id: a whole number from 1 to the database's largest; anything else (1.3e22,
    2**64) is a 400 naming the parameter, not an overflow in the driver."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", DB_ID_MAX)
        super().__init__(*args, **kwargs)


class ListFilterBackend(DjangoFilterBackend):
    """django-filter's backend for lists only, building no FilterSet without a query string
    (a costly deep copy per request that would change nothing)."""

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", "list") not in ("list", None) or not request.query_params:
            return queryset
        return super().filter_queryset(request, queryset, view)
