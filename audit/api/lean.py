"""A cheaper `to_representation` for the API's read serializers (docs/performance.md).

DRF turns a row into JSON field by field through several calls per field (bind, get
the attribute, check for None, convert): a page of 50 hosts is ~2,000 field visits and
most of the request's CPU. `LeanReadMixin` compiles, once per serializer class, a plan
from the serializer's own fields: for each one the attribute path and a direct
converter for the plain types (text, numbers, booleans, JSON, UUID, date-times, slug
and primary-key relations). Any other field (method fields, nested serializers, ...) is
rendered by calling the method, nested lean serializers by their own plan, and any
other field by DRF itself. The serializer stays what the OpenAPI schema is made
from; tests/test_api_lists.py holds the lean output equal to DRF's own.

`LeanListMixin` goes one step further for a list page: when every field of the
serializer is a column, a related column, a value computed from columns
(`lean_row_values`) or a nested list of such rows, the page is read with `values()`
and rendered from those rows: no model instances (most of a wide row's cost, and the
cyclic garbage of prefetched relations).

`FiltersOnListMixin` keeps a viewset's query-string filters to its list.

In `audit`, the lowest layer, so that every app's API can use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from django.core.exceptions import FieldDoesNotExist, FieldError
from django.db.models.manager import BaseManager
from django.utils import timezone
from rest_framework import pagination, relations, serializers
from rest_framework.settings import api_settings

from audit.api.json_rows import JSONRow, json_rows

# Fields whose DRF to_representation returns the value as it is (None stays None).
_AS_IS = (serializers.BooleanField, serializers.JSONField, serializers.ReadOnlyField)


def _iso(value) -> str:
    """A marker: to_representation renders date-times itself, in the time zone it
    looked up once per row (as DRF's DateTimeField does per field)."""
    raise NotImplementedError


def _converter(field: serializers.Field) -> tuple[str, Callable[[Any], Any]] | None:
    """(attribute path, converter) for a field this module renders, else None."""
    if field.source == "*" or getattr(field, "write_only", False):
        return None
    source = field.source
    if isinstance(field, serializers.ChoiceField):
        # Text choices render as themselves; anything else as DRF does.
        if all(isinstance(key, str) for key in field.choices):
            return source, _same
        return None
    if isinstance(field, serializers.DateTimeField):
        if getattr(field, "format", api_settings.DATETIME_FORMAT) != api_settings.DATETIME_FORMAT:
            return None
        if api_settings.DATETIME_FORMAT.lower() != "iso-8601" or hasattr(field, "timezone"):
            return None
        return source, _iso
    if isinstance(field, serializers.UUIDField):
        return (source, str) if field.uuid_format == "hex_verbose" else None
    if isinstance(field, serializers.IntegerField):
        return source, int
    if isinstance(field, serializers.FloatField):
        return source, float
    if isinstance(field, serializers.CharField):  # also IPAddressField
        return source, str
    if isinstance(field, serializers.ListField) and isinstance(field.child, serializers.CharField):
        return source, _strings
    if isinstance(field, _AS_IS) and not getattr(field, "binary", False):
        return source, _same
    if isinstance(field, serializers.ListSerializer) and isinstance(field.child, LeanReadMixin):
        child = type(field.child)()
        if any(get is None for _name, get, _convert in child._plan()):
            return None  # its fallbacks would need a bound field
        render = child.to_representation

        def render_all(rows) -> list:
            return [render(row) for row in (rows.all() if isinstance(rows, BaseManager) else rows)]

        render_all.needs_instance = True  # related rows: not in a values() row
        render_all.child_class = type(field.child)
        return source, render_all
    if isinstance(field, relations.SlugRelatedField):
        return f"{source}.{field.slug_field}", _same
    if (
        isinstance(field, relations.PrimaryKeyRelatedField)
        and field.pk_field is None
        and "." not in source
    ):
        return f"{source}_id", _same
    return None


def _rendered(value, convert: Callable, zone):
    """A plain field's value as DRF renders it (date-times in `zone`, as ISO 8601)."""
    if value is None:
        return None
    if convert is _iso:
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return convert(value)


def _same(value):
    return value


def _strings(values) -> list:
    return [None if v is None else str(v) for v in values]


@dataclass(frozen=True)
class NestedRows:
    """A nested list field read as rows: the related model's rows whose foreign key
    `parent_key` points at the page's rows."""

    related_model: type
    parent_key: str  # attname of the foreign key on the related model
    child_class: type

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


def _nested_rows(serializer, known: tuple[str, Callable]) -> NestedRows | None:
    """A NestedRows for a nested lean list field over a reverse foreign key whose child
    serializer reads rows itself, else None."""
    source, convert = known
    child_class = getattr(convert, "child_class", None)
    model = getattr(getattr(serializer, "Meta", None), "model", None)
    if child_class is None or model is None or "." in source or not child_class.row_lookups():
        return None
    if any(isinstance(lookup, NestedRows) for _n, lookup, _c in child_class._lean_rows):
        return None  # one level only
    try:
        relation = model._meta.get_field(source)
    except FieldDoesNotExist:
        return None
    if not relation.one_to_many:
        return None
    return NestedRows(relation.related_model, relation.field.attname, child_class)


class LeanReadMixin:
    """For a ModelSerializer used to read: renders the fields `_converter` knows without
    DRF's per-field machinery, the rest through DRF; the same output either way."""

    # Per field: (name, attribute getter, converter); (name, None, method name) for a
    # method field; (name, None, None) for a field DRF renders.
    _lean_plan: list[tuple] | None = None
    # Per field: (name, ORM lookup, converter), if every field is an attribute path.
    _lean_rows: list[tuple] | None = None
    # Fields that are no column (method fields, properties) but computed from some:
    # name -> (lookups, function of their values), for rows read by LeanListMixin.
    lean_row_values: dict[str, tuple[tuple[str, ...], Callable]] = {}
    # The same computations in SQL, for pages PostgreSQL renders (audit.api.json_rows):
    # name -> template over the lookups' columns ({0}, {1}, ...).
    lean_row_sql: dict[str, str] = {}

    def _plan(self) -> list[tuple]:
        cls = type(self)
        if cls.__dict__.get("_lean_plan") is None:
            plan, rows = [], []
            for field in self._readable_fields:
                known = _converter(field)
                if isinstance(field, serializers.SerializerMethodField):
                    plan.append((field.field_name, None, field.method_name))
                elif known is None:
                    plan.append((field.field_name, None, None))
                else:
                    path, convert = known
                    plan.append((field.field_name, attrgetter(path), convert))
                if field.field_name in self.lean_row_values:
                    lookups, compute = self.lean_row_values[field.field_name]
                    rows.append((field.field_name, tuple(lookups), compute))
                elif known is not None and not getattr(known[1], "needs_instance", False):
                    rows.append((field.field_name, known[0].replace(".", "__"), known[1]))
                elif known is not None and (nested := _nested_rows(self, known)) is not None:
                    rows.append((field.field_name, nested, None))
            cls._lean_rows = rows if len(rows) == len(plan) else []
            cls._lean_plan = plan
        return cls._lean_plan

    @classmethod
    def row_lookups(cls) -> list[str]:
        """The ORM lookups to read a row with (`QuerySet.values(*lookups)`) when every
        field is a plain attribute path, else []: then a list page needs no model
        instances, whose construction was most of a wide row's cost."""
        if cls.__dict__.get("_lean_plan") is None:
            cls()._plan()
        lookups: dict[str, None] = {}
        for _name, lookup, _convert in cls._lean_rows:
            if isinstance(lookup, NestedRows):
                lookups["pk"] = None  # to find its related rows by
            else:
                lookups.update(dict.fromkeys(lookup if isinstance(lookup, tuple) else (lookup,)))
        return list(lookups)

    @classmethod
    def rows_complete(cls, rows: list[dict]) -> list[dict]:
        """Add to `rows` (values() of row_lookups) the related rows of their nested
        fields: one query per nested field for the whole page, in the related model's
        order, as prefetch_related would read them."""
        for name, lookup, _convert in cls._lean_rows:
            if isinstance(lookup, NestedRows):
                lookup.attach(rows, name)
        return rows

    @classmethod
    def render_row(cls, row: dict) -> dict:
        """The representation of one row of `row_lookups` (completed by rows_complete)."""
        result = {}
        zone = timezone.get_current_timezone()
        for name, lookup, convert in cls._lean_rows:
            if isinstance(lookup, NestedRows):
                render = lookup.child_class.render_row
                result[name] = [render(child) for child in row[name]]
                continue
            if isinstance(lookup, tuple):  # computed from several columns
                result[name] = convert(*(row[part] for part in lookup))
                continue
            result[name] = _rendered(row[lookup], convert, zone)
        return result

    def to_representation(self, instance) -> dict:
        if type(instance) is JSONRow:  # rendered by PostgreSQL (LeanListMixin)
            return instance.fragment
        if isinstance(instance, dict) and type(self)._lean_rows:
            return self.render_row(instance)  # a row from LeanListMixin
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


class LeanListMixin:
    """For a read viewset: its list page is read as rows (`values()`, one dict per row)
    when its serializer can render every field from one (LeanReadMixin.row_lookups);
    the page is the same JSON, without building model instances. On PostgreSQL, when
    the answer is compact JSON, the database renders each row (audit.api.json_rows)."""

    def _json_rows(self, rows, serializer_class):
        renderer = getattr(self.request, "accepted_renderer", None)
        renders_fragments = getattr(renderer, "renders_fragments", None)
        if renders_fragments is None or not renders_fragments(self.request.accepted_media_type):
            return None
        keep: tuple[str, ...] = ()
        if isinstance(self.paginator, pagination.CursorPagination):
            ordering = self.paginator.ordering
            ordering = (ordering,) if isinstance(ordering, str) else tuple(ordering)
            keep = tuple(name.lstrip("-") for name in ordering)  # the keyset's positions
        return json_rows(rows, serializer_class, keep)

    def paginate_queryset(self, queryset):
        serializer_class = self.get_serializer_class()
        lookups = (
            serializer_class.row_lookups()
            if getattr(self, "action", None) == "list"
            and issubclass(serializer_class, LeanReadMixin)
            else []
        )
        if lookups:
            try:
                rows = queryset.values(*lookups)
            except FieldError:  # a path that is not a column (e.g. a property)
                pass
            else:
                rendered = self._json_rows(rows, serializer_class)
                if rendered is not None:
                    return super().paginate_queryset(rendered)
                page = super().paginate_queryset(rows)
                return None if page is None else serializer_class.rows_complete(list(page))
        return super().paginate_queryset(queryset)


class FiltersOnListMixin:
    """For a viewset: the query-string filters apply to its list only, and are not run
    when the query string is empty. DRF's get_object
    filters too, so every detail request built a FilterSet (deep copies of its form
    fields) to filter one row by its key; the schema lists the filters on the list
    only, and that is what they do now."""

    def filter_queryset(self, queryset):
        if getattr(self, "action", None) != "list" or not self.request.query_params:
            # No filter given: the FilterSet (built per request, deep copies of its
            # filters and form fields) would give back the queryset as it is.
            return queryset
        return super().filter_queryset(queryset)
