"""A cheaper `to_representation` for the API's read serializers (docs/performance.md).

DRF's per-field calls were most of a list page's CPU. `LeanReadMixin` compiles, once per
class, a plan from the serializer's own fields (a path and a direct converter for plain
types; DRF for the rest), so the output stays DRF's (tests/test_api_lists.py). When every
field comes from columns, a row plan renders `values()` rows without model instances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from operator import attrgetter
from typing import Any, NamedTuple

from django.core.exceptions import FieldDoesNotExist
from django.db.models.manager import BaseManager
from django.utils import timezone
from rest_framework import relations, serializers
from rest_framework.settings import api_settings

# Fields whose DRF to_representation returns the value as it is (None stays None).
_AS_IS = (serializers.BooleanField, serializers.JSONField, serializers.ReadOnlyField)


def as_is(value):
    return value


def strings(values) -> list:
    return [None if v is None else str(v) for v in values]


def iso_datetime(value: datetime, zone: tzinfo) -> str:
    """A date-time as DRF renders it: ISO 8601 in `zone`, UTC as "Z"."""
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class NestedList:
    """The converter of a nested list of lean serializers (a related manager or a list)."""

    def __init__(self, child_class: type[LeanReadMixin]) -> None:
        self.child_class = child_class
        self._render = child_class().to_representation

    def __call__(self, rows) -> list:
        rows = rows.all() if isinstance(rows, BaseManager) else rows
        return [self._render(row) for row in rows]


def _converter(field: serializers.Field) -> tuple[str, Callable[..., Any]] | None:
    """(attribute path, converter) of a field rendered without DRF, else None."""
    if field.source == "*" or getattr(field, "write_only", False):
        return None
    source = field.source
    if isinstance(field, serializers.ChoiceField):
        # Text choices render as themselves; anything else as DRF does.
        return (source, as_is) if all(isinstance(key, str) for key in field.choices) else None
    if isinstance(field, serializers.DateTimeField):
        iso = str(getattr(field, "format", api_settings.DATETIME_FORMAT)).lower() == "iso-8601"
        return (source, iso_datetime) if iso and not hasattr(field, "timezone") else None
    if isinstance(field, serializers.UUIDField):
        return (source, str) if field.uuid_format == "hex_verbose" else None
    if isinstance(field, serializers.IntegerField):
        return source, int
    if isinstance(field, serializers.FloatField):
        return source, float
    if isinstance(field, serializers.CharField):  # also IPAddressField
        return source, str
    if isinstance(field, serializers.ListField) and isinstance(field.child, serializers.CharField):
        return source, strings
    if isinstance(field, _AS_IS) and not getattr(field, "binary", False):
        return source, as_is
    if isinstance(field, serializers.ListSerializer) and isinstance(field.child, LeanReadMixin):
        if any(get is None for _name, get, _convert in type(field.child)()._plan()):
            return None  # its fallbacks would need a bound field
        return source, NestedList(type(field.child))
    if isinstance(field, relations.SlugRelatedField):
        return f"{source}.{field.slug_field}", as_is
    if isinstance(field, relations.PrimaryKeyRelatedField):
        return (f"{source}_id", as_is) if field.pk_field is None and "." not in source else None
    return None


def _rendered(value, convert: Callable, zone: tzinfo):
    if value is None:
        return None
    if convert is iso_datetime:
        return iso_datetime(value, zone)
    return convert(value)


@dataclass(frozen=True)
class NestedRows:
    """A nested list field read as rows: the related rows whose `parent_key` is a page row's."""

    related_model: type
    parent_key: str  # attname of the foreign key on the related model
    child_class: type[LeanReadMixin]

    def attach(self, rows: list[dict], name: str) -> None:
        by_parent: dict[Any, list[dict]] = {row["pk"]: [] for row in rows}
        for row in rows:
            row[name] = by_parent[row["pk"]]
        if not by_parent:
            return
        related = self.related_model._default_manager.filter(
            **{f"{self.parent_key}__in": list(by_parent)}
        ).values(self.parent_key, *self.child_class.row_lookups())
        for child in related:
            by_parent[child[self.parent_key]].append(child)


class RowField(NamedTuple):
    name: str
    # An ORM lookup (a column); several, whose values `convert` combines; or NestedRows.
    lookup: str | tuple[str, ...] | NestedRows
    convert: Callable[..., Any] | None


def _nested_rows(serializer, source: str, convert: Callable) -> NestedRows | None:
    """NestedRows for a nested lean list over a reverse foreign key (one level), else None."""
    model = getattr(getattr(serializer, "Meta", None), "model", None)
    if not isinstance(convert, NestedList) or model is None or "." in source:
        return None
    child_class = convert.child_class
    plan = child_class.row_plan()
    if not plan or any(isinstance(field.lookup, NestedRows) for field in plan):
        return None
    try:
        relation = model._meta.get_field(source)
    except FieldDoesNotExist:
        return None
    if not relation.one_to_many:
        return None
    return NestedRows(relation.related_model, relation.field.attname, child_class)


class JSONRow(dict):
    """A row whose JSON the database made (`fragment`); the dict holds the keyset's columns."""

    __slots__ = ("fragment",)


class LeanReadMixin:
    # This docstring is the schema's description of every serializer without its own.
    """For a ModelSerializer used to read: renders the fields `_converter` knows without
    DRF's per-field machinery, the rest through DRF; the same output either way."""

    # Per field: (name, attribute getter, converter); (name, None, method name) for a
    # method field; (name, None, None) for a field DRF renders.
    _lean_plan: list[tuple] | None = None
    _row_plan: list[RowField] = []
    # Fields computed from columns: name -> (lookups, function of their values).
    lean_row_values: dict[str, tuple[tuple[str, ...], Callable]] = {}
    # The same in SQL (core.api.sql_rows): name -> template over the columns ({0}, ...).
    lean_row_sql: dict[str, str] = {}

    def _plan(self) -> list[tuple]:
        cls = type(self)
        if cls.__dict__.get("_lean_plan") is None:
            plan, rows = [], []
            for field in self._readable_fields:
                name = field.field_name
                known = _converter(field)
                if isinstance(field, serializers.SerializerMethodField):
                    plan.append((name, None, field.method_name))
                elif known is None:
                    plan.append((name, None, None))
                else:
                    plan.append((name, attrgetter(known[0]), known[1]))
                if name in self.lean_row_values:
                    lookups, compute = self.lean_row_values[name]
                    rows.append(RowField(name, tuple(lookups), compute))
                elif known is None:
                    continue
                elif not isinstance(known[1], NestedList):
                    rows.append(RowField(name, known[0].replace(".", "__"), known[1]))
                elif (nested := _nested_rows(self, *known)) is not None:
                    rows.append(RowField(name, nested, None))
            cls._row_plan = rows if len(rows) == len(plan) else []
            cls._lean_plan = plan
        return cls._lean_plan

    @classmethod
    def row_plan(cls) -> list[RowField]:
        """[] if some field needs a model instance."""
        if cls.__dict__.get("_lean_plan") is None:
            cls()._plan()
        return cls._row_plan

    @classmethod
    def row_lookups(cls) -> list[str]:
        """The lookups to read a row with (`QuerySet.values(*lookups)`)."""
        lookups: dict[str, None] = {}
        for field in cls.row_plan():
            if isinstance(field.lookup, NestedRows):
                lookups["pk"] = None  # to find its related rows by
            elif isinstance(field.lookup, tuple):
                lookups.update(dict.fromkeys(field.lookup))
            else:
                lookups[field.lookup] = None
        return list(lookups)

    @classmethod
    def rows_complete(cls, rows: list[dict]) -> list[dict]:
        """Add the nested fields' related rows to `rows`: one query per nested field."""
        for name, lookup, _convert in cls.row_plan():
            if isinstance(lookup, NestedRows):
                lookup.attach(rows, name)
        return rows

    @classmethod
    def render_row(cls, row: dict) -> dict:
        """One row of `row_lookups`, completed by rows_complete."""
        result = {}
        zone = timezone.get_current_timezone()
        for name, lookup, convert in cls.row_plan():
            if isinstance(lookup, NestedRows):
                render = lookup.child_class.render_row
                result[name] = [render(child) for child in row[name]]
            elif isinstance(lookup, tuple):
                result[name] = convert(*(row[part] for part in lookup))
            else:
                result[name] = _rendered(row[lookup], convert, zone)
        return result

    def to_representation(self, instance) -> dict:
        if type(instance) is JSONRow:
            return instance.fragment
        if isinstance(instance, dict) and self.row_plan():
            return self.render_row(instance)
        result = {}
        fields = None
        zone = timezone.get_current_timezone()
        for name, get, convert in self._plan():
            if get is None and convert is not None:  # a method field: the method's value
                result[name] = getattr(self, convert)(instance)
                continue
            if get is None:
                fields = fields or self.fields
                field = fields[name]
                attribute = field.get_attribute(instance)
                check = attribute.pk if isinstance(attribute, relations.PKOnlyObject) else attribute
                result[name] = None if check is None else field.to_representation(attribute)
                continue
            try:
                value = get(instance)
            except AttributeError:  # a null relation on the path (source.name, no source)
                value = None
            result[name] = _rendered(value, convert, zone)
        return result
