"""`LeanListMixin`: a read viewset's list page read as `values()` rows when its serializer
has a row plan (core.api.rows), rendered by PostgreSQL where possible (core.api.sql_rows)."""

from __future__ import annotations

from django.core.exceptions import FieldError
from django.db.models import QuerySet
from rest_framework import pagination

from core.api.rows import LeanReadMixin
from core.api.sql_rows import json_rows


class LeanListMixin:
    def _json_rows(self, rows: QuerySet, serializer_class: type[LeanReadMixin]) -> QuerySet | None:
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
        listing = getattr(self, "action", None) == "list"
        lean = listing and issubclass(serializer_class, LeanReadMixin)
        lookups = serializer_class.row_lookups() if lean else []
        if not lookups:
            return super().paginate_queryset(queryset)
        try:
            rows = queryset.values(*lookups)
        except FieldError:  # a path that is not a column (e.g. a property)
            return super().paginate_queryset(queryset)
        rendered = self._json_rows(rows, serializer_class)
        if rendered is not None:
            return super().paginate_queryset(rendered)
        page = super().paginate_queryset(rows)
        return None if page is None else serializer_class.rows_complete(list(page))
