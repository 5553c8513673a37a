"""List pages whose rows PostgreSQL renders to JSON (docs/performance.md).

A list page read as rows (`LeanListMixin`) still costs Python, per row and field, the
decoding of every column by the driver (date-times above all) and the rendering of the
serializer's plan: about half of a 50-row page's CPU. On PostgreSQL the same page is
read as one JSON text per row, made by `json_build_object` from the same columns; the
renderer embeds it as it is (`orjson.Fragment`).

The SQL is derived from the serializer's row plan (`LeanReadMixin._lean_rows`), field by
field, and only where the result is the same as DRF's rendering: a field type this module
does not know (or a value computed in Python without `sql`) leaves the whole page to the
Python path. `tests/test_api_lists.py` holds both paths equal, value by value and key
order, on PostgreSQL.

The page's own query is built by Django as before (filters, order, keyset or offset
page); it becomes a subquery, `SELECT json_build_object(...) FROM (<page>) AS t(c0, ...)`.
The outer SQL is text made once per serializer and column list: compiling JSON
expressions through the ORM cost more than the Python rendering it saves.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.core.exceptions import EmptyResultSet, FieldDoesNotExist
from django.db import connections
from django.db.models.query import BaseIterable

# Django field types whose column PostgreSQL renders to JSON as DRF renders the value.
_INTEGERS = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}
_TEXTS = {"CharField", "TextField", "SlugField", "EmailField", "URLField"}
_AS_IS = _INTEGERS | _TEXTS | {"BooleanField", "JSONField"}
# json_build_object takes at most 100 arguments (PostgreSQL's FUNC_MAX_ARGS).
_MAX_FIELDS = 50

# DRF's ISO 8601 in UTC: seconds, then microseconds only when there are any, then "Z".
_ISO_UTC = (
    "(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', {c}) = {c} THEN ''"
    " ELSE to_char({c} AT TIME ZONE 'UTC', '.US') END || 'Z')"
)


class JSONRow(dict):
    """A row of a page rendered by PostgreSQL: its JSON, plus the columns the paginator
    itself reads (the keyset's order fields) as Python values."""

    __slots__ = ("fragment",)


def _model_field(model, lookup: str):
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


def _field_sql(column: str, field, convert) -> str | None:
    """The SQL rendering `column` (of model field `field`) as `convert` does in Python."""
    from audit.api.lean import _iso, _same, _strings

    kind = field.get_internal_type() if field is not None else None
    if convert is _iso and kind == "DateTimeField":
        return _ISO_UTC.format(c=column)
    if convert is _same and kind in _AS_IS:
        return column
    if convert is int and kind in _INTEGERS:
        return column
    if convert is float and kind == "FloatField":
        return column
    if convert is str and kind in _TEXTS:
        return column
    if convert is str and kind == "UUIDField":
        return f"({column})::text"  # 8-4-4-4-12, lower case, as str(uuid)
    if convert is _strings and kind == "JSONField":
        return column  # a list of strings (validated as such on the way in)
    return None


def _object_sql(pairs: list[tuple[str, str]]) -> str | None:
    """A JSON object of (name, SQL) pairs, or None beyond one json_build_object's."""
    if len(pairs) > _MAX_FIELDS:
        return None
    args = ", ".join(f"'{name}', {sql}" for name, sql in pairs)
    return f"json_build_object({args})"


def _object_text_sql(pairs: list[tuple[str, str]]) -> str:
    """The same object as text, of any number of pairs: objects of _MAX_FIELDS pairs
    each, joined by cutting the '}' and '{' between them."""
    chunks = [
        f"({_object_sql(pairs[i : i + _MAX_FIELDS])})::text"
        for i in range(0, len(pairs), _MAX_FIELDS)
    ]
    text = chunks[0]
    for chunk in chunks[1:]:
        text = f"left({text}, -1) || ', ' || substr({chunk}, 2)"
    return text


def _nested_sql(nested, parent_column: str) -> str | None:
    """A correlated subquery: the related rows of one parent row as a JSON array, in the
    related model's order (as NestedRows reads them)."""
    model = nested.related_model
    pairs = []
    for name, lookup, convert in nested.child_class._lean_rows:
        if not isinstance(lookup, str) or "__" in lookup:
            return None
        field = _model_field(model, lookup)
        if field is None:
            return None
        sql = _field_sql(f'n."{field.column}"', field, convert)
        if sql is None:
            return None
        pairs.append((name, sql))
    order = []
    for name in model._meta.ordering:
        descending = isinstance(name, str) and name.startswith("-")
        field = _model_field(model, name.lstrip("-")) if isinstance(name, str) else None
        if field is None or "__" in name:
            return None
        order.append(f'n."{field.column}"' + (" DESC" if descending else ""))
    row = _object_sql(pairs)
    if row is None:
        return None
    order_by = f" ORDER BY {', '.join(order)}" if order else ""
    key = model._meta.get_field(nested.parent_key).column
    return (
        f"(SELECT coalesce(json_agg({row}{order_by}), '[]'::json) "
        f'FROM "{model._meta.db_table}" AS n WHERE n."{key}" = {parent_column})'
    )


def row_json_sql(serializer_class, model, names: list[str]) -> str | None:
    """The JSON text of one row of a subquery `t` whose columns are `names`
    (as c0, c1, ...), rendering what serializer_class.render_row would; None if some
    field cannot be rendered so."""
    from audit.api.lean import NestedRows

    column = {name: f"t.c{i}" for i, name in enumerate(names)}
    pairs = []
    for name, lookup, convert in serializer_class._lean_rows:
        if isinstance(lookup, NestedRows):
            if "pk" not in column:
                return None
            sql = _nested_sql(lookup, column["pk"])
        elif isinstance(lookup, tuple):  # computed from columns: only with its SQL
            template = serializer_class.lean_row_sql.get(name)
            if template is None or any(part not in column for part in lookup):
                return None
            sql = "(" + template.format(*(column[part] for part in lookup)) + ")"
        else:
            if lookup not in column:
                return None
            sql = _field_sql(column[lookup], _model_field(model, lookup), convert)
        if sql is None:
            return None
        pairs.append((name, sql))
    return _object_text_sql(pairs) if pairs else None


_sql_cache: dict[tuple, str | None] = {}


def page_sql(serializer_class, model, names: list[str], keep: tuple[str, ...]) -> str | None:
    """The outer query over a page's subquery (`{page}`): the `keep` columns, then the
    row's JSON as text."""
    key = (serializer_class, model, tuple(names), keep)
    if key not in _sql_cache:
        row = row_json_sql(serializer_class, model, names)
        if row is None or any(name not in names for name in keep):
            _sql_cache[key] = None
        else:
            kept = "".join(f"t.c{names.index(name)}, " for name in keep)
            columns = ", ".join(f"c{i}" for i in range(len(names)))
            _sql_cache[key] = f"SELECT {kept}{row} FROM ({{page}}) AS t({columns})"
    return _sql_cache[key]


def _column_names(query) -> list[str]:
    """The names of a values() query's columns, in the SQL's order (as Django's
    ValuesIterable reads them)."""
    if query.selected:
        return list(query.selected)
    return [*query.extra_select, *query.values_select, *query.annotation_select]


class _JSONRowsIterable(BaseIterable):
    """Yields a JSONRow per row of a values() queryset."""

    serializer_class: Any = None
    keep: tuple[str, ...] = ()

    def __iter__(self):
        queryset = self.queryset
        query = queryset.query
        names = _column_names(query)
        outer = page_sql(self.serializer_class, queryset.model, names, self.keep)
        if outer is None:  # checked by json_rows() before: the same names
            raise RuntimeError(f"{self.serializer_class.__name__}: no SQL for {names}")
        try:
            inner, params = query.get_compiler(queryset.db).as_sql()
        except EmptyResultSet:
            return
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(outer.replace("{page}", inner), params)
            for *kept, text in cursor.fetchall():
                row = JSONRow(zip(self.keep, kept, strict=True))
                row.fragment = orjson.Fragment(text)
                yield row


_iterables: dict[tuple, type] = {}


def json_rows(rows, serializer_class, keep: tuple[str, ...] = ()):
    """`rows` (a values() queryset of serializer_class.row_lookups()) yielding JSONRows
    rendered by PostgreSQL, or None where that is not possible (another database, or a
    field without an SQL rendering)."""
    if connections[rows.db].vendor != "postgresql":
        return None
    names = _column_names(rows.query)
    if page_sql(serializer_class, rows.model, names, keep) is None:
        return None
    key = (serializer_class, keep)
    if key not in _iterables:
        _iterables[key] = type(
            f"{serializer_class.__name__}JSONRows",
            (_JSONRowsIterable,),
            {"serializer_class": serializer_class, "keep": keep},
        )
    rows = rows._chain()
    rows._iterable_class = _iterables[key]
    return rows
