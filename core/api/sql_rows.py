"""List pages whose rows PostgreSQL renders to JSON (docs/performance.md).

Each row is one `json_build_object` text from the serializer's row plan, embedded as it
is (`orjson.Fragment`); a field it cannot render as DRF does leaves the page to Python.
The SQL wraps Django's page query and is built once per serializer: compiling JSON
expressions through the ORM would cost more than it saves.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from django.core.exceptions import EmptyResultSet, FieldDoesNotExist
from django.db import connections
from django.db.models import Field, Model, QuerySet
from django.db.models.query import BaseIterable

from core.api.rows import JSONRow, LeanReadMixin, NestedRows, as_is, iso_datetime, strings

_INTEGERS = set(
    "AutoField BigAutoField SmallAutoField IntegerField BigIntegerField SmallIntegerField"
    " PositiveIntegerField PositiveBigIntegerField PositiveSmallIntegerField".split()
)
_TEXTS = {"CharField", "TextField", "SlugField", "EmailField", "URLField"}
# Per converter, the Django field types whose column PostgreSQL renders to JSON as the
# converter renders the value (JSON lists of strings are validated as such on the way in).
_SAME_IN_JSON: dict[Callable, set[str]] = {
    as_is: _INTEGERS | _TEXTS | {"BooleanField", "JSONField"},
    int: _INTEGERS,
    float: {"FloatField"},
    str: _TEXTS,
    strings: {"JSONField"},
}
# json_build_object takes at most 100 arguments (PostgreSQL's FUNC_MAX_ARGS).
_MAX_FIELDS = 50

# DRF's ISO 8601 in UTC: seconds, then microseconds only when there are any, then "Z".
_ISO_UTC = (
    "(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', {c}) = {c} THEN ''"
    " ELSE to_char({c} AT TIME ZONE 'UTC', '.US') END || 'Z')"
)


def _model_field(model: type[Model], lookup: str) -> Field | None:
    """The model field at the end of an ORM lookup path, or None (an annotation)."""
    field = None
    for part in lookup.split("__"):
        if model is None:
            return None
        try:
            field = model._meta.pk if part == "pk" else model._meta.get_field(part)
        except FieldDoesNotExist:
            return None
        model = field.related_model
    if field is not None and field.is_relation:
        field = field.target_field  # the key column itself
    return field


def field_sql(column: str, field: Field | None, convert: Callable) -> str | None:
    """The SQL rendering `column` (of model field `field`) as `convert` does in Python."""
    kind = field.get_internal_type() if field is not None else None
    if convert is iso_datetime and kind == "DateTimeField":
        return _ISO_UTC.format(c=column)
    if convert is str and kind == "UUIDField":
        return f"({column})::text"  # 8-4-4-4-12, lower case, as str(uuid)
    return column if kind in _SAME_IN_JSON.get(convert, ()) else None


def _object_sql(pairs: list[tuple[str, str]]) -> str | None:
    """A JSON object of (name, SQL) pairs, or None beyond one json_build_object's."""
    if len(pairs) > _MAX_FIELDS:
        return None
    args = ", ".join(f"'{name}', {sql}" for name, sql in pairs)
    return f"json_build_object({args})"


def _object_text_sql(pairs: list[tuple[str, str]]) -> str:
    """The same object as text, of any number of pairs (objects joined at '}' and '{')."""
    chunks = [
        f"({_object_sql(pairs[i : i + _MAX_FIELDS])})::text"
        for i in range(0, len(pairs), _MAX_FIELDS)
    ]
    text = chunks[0]
    for chunk in chunks[1:]:
        text = f"left({text}, -1) || ', ' || substr({chunk}, 2)"
    return text


def _pairs(
    serializer_class: type[LeanReadMixin], model: type[Model], column: dict[str, str]
) -> list[tuple[str, str]] | None:
    """(name, SQL) of each field of the row plan over `column`, or None if one has none."""
    pairs = []
    for name, lookup, convert in serializer_class.row_plan():
        if isinstance(lookup, NestedRows):
            sql = _nested_sql(lookup, column["pk"]) if "pk" in column else None
        elif isinstance(lookup, tuple):  # computed from columns: only with its SQL
            template = serializer_class.lean_row_sql.get(name)
            if template is None or any(part not in column for part in lookup):
                return None
            sql = "(" + template.format(*(column[part] for part in lookup)) + ")"
        elif lookup in column:
            sql = field_sql(column[lookup], _model_field(model, lookup), convert)
        else:
            return None
        if sql is None:
            return None
        pairs.append((name, sql))
    return pairs


def _nested_sql(nested: NestedRows, parent_column: str) -> str | None:
    """A correlated subquery: one parent row's related rows as a JSON array, in order."""
    model = nested.related_model
    column = {}
    for lookup in nested.child_class.row_lookups():
        field = _model_field(model, lookup)
        if field is None or "__" in lookup:
            return None
        column[lookup] = f'n."{field.column}"'
    order = []
    for name in model._meta.ordering:
        descending = isinstance(name, str) and name.startswith("-")
        field = _model_field(model, name.lstrip("-")) if isinstance(name, str) else None
        if field is None or "__" in name:
            return None
        order.append(f'n."{field.column}"' + (" DESC" if descending else ""))
    pairs = _pairs(nested.child_class, model, column)
    row = None if pairs is None else _object_sql(pairs)
    if row is None:
        return None
    order_by = f" ORDER BY {', '.join(order)}" if order else ""
    key = model._meta.get_field(nested.parent_key).column
    return (
        f"(SELECT coalesce(json_agg({row}{order_by}), '[]'::json) "
        f'FROM "{model._meta.db_table}" AS n WHERE n."{key}" = {parent_column})'
    )


def row_json_sql(
    serializer_class: type[LeanReadMixin], model: type[Model], names: list[str]
) -> str | None:
    """The JSON text of a row of subquery `t` (columns c0, c1, ...: `names`), or None."""
    pairs = _pairs(serializer_class, model, {name: f"t.c{i}" for i, name in enumerate(names)})
    return _object_text_sql(pairs) if pairs else None


def page_sql(
    serializer_class: type[LeanReadMixin], model: type[Model], keep: tuple[str, ...]
) -> str | None:
    """The outer query over a page's subquery (`{page}`): the `keep` columns, then JSON."""
    # values() selects its columns in the order it is given them (Django 5.2).
    names = serializer_class.row_lookups()
    row = row_json_sql(serializer_class, model, names)
    if row is None or any(name not in names for name in keep):
        return None
    kept = "".join(f"t.c{names.index(name)}, " for name in keep)
    columns = ", ".join(f"c{i}" for i in range(len(names)))
    return f"SELECT {kept}{row} FROM ({{page}}) AS t({columns})"


class _JSONRows(BaseIterable):
    """A JSONRow per row of the page, from `outer_sql` around its SQL (Django internals:
    `_iterable_class` survives the paginator's order_by, filter and slicing)."""

    outer_sql = ""
    keep: tuple[str, ...] = ()

    def __iter__(self):
        queryset = self.queryset
        try:
            inner, params = queryset.query.get_compiler(queryset.db).as_sql()
        except EmptyResultSet:
            return
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(self.outer_sql.replace("{page}", inner), params)
            for *kept, text in cursor.fetchall():
                row = JSONRow(zip(self.keep, kept, strict=True))
                row.fragment = orjson.Fragment(text)
                yield row

    @classmethod
    def of(cls, queryset: QuerySet) -> QuerySet:
        rows = queryset.all()
        rows._iterable_class = cls
        return rows


# Per (serializer class, model, keep): its _JSONRows, made once; None: no SQL for it.
_iterables: dict[tuple, type[_JSONRows] | None] = {}


def json_rows(
    rows: QuerySet, serializer_class: type[LeanReadMixin], keep: tuple[str, ...] = ()
) -> QuerySet | None:
    """`rows` (values() of row_lookups()) yielding JSONRows PostgreSQL renders, or None."""
    if connections[rows.db].vendor != "postgresql":
        return None
    key = (serializer_class, rows.model, keep)
    if key not in _iterables:
        outer_sql = page_sql(serializer_class, rows.model, keep)
        attributes = {"outer_sql": outer_sql, "keep": keep}
        _iterables[key] = None if outer_sql is None else type("JSONRows", (_JSONRows,), attributes)
    iterable = _iterables[key]
    return None if iterable is None else iterable.of(rows)
