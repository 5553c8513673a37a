"""`LeanListMixin`: a read viewset's list page read as `values()` rows when its serializer
has a row plan (core.api.rows), rendered by PostgreSQL where possible (core.api.sql_rows)."""

from __future__ import annotations

from django.core.exceptions import FieldError
from django.db.models import QuerySet
from rest_framework import pagination
from rest_framework.response import Response

from core.api.rows import JSONRow, LeanReadMixin
from core.api.sql_rows import json_rows


def _release_after_render(response) -> None:
    """After rendering, nothing needs the way back from the view to its response: drop it,
    so that a page's rows are freed with the response instead of waiting in DRF's
    reference cycles (view <-> response, response <-> its renderer context) for a full
    garbage-collector pass, which stopped a worker 40-60 ms (docs/performance.md)."""
    context = getattr(response, "renderer_context", None) or {}
    context.pop("response", None)
    view = context.get("view")
    if view is not None:
        view.response = None
        view.__dict__.pop("_paginator", None)


class LeanListMixin:
    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        if hasattr(response, "add_post_render_callback"):
            response.add_post_render_callback(_release_after_render)
        return response

    def list(self, request, *args, **kwargs) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        if page is None:
            return Response(self.get_serializer(queryset, many=True).data)
        return self.get_paginated_response(self._page_rendered(page))

    def _page_rendered(self, page: list) -> list:
        serializer_class = self.get_serializer_class()
        if page and isinstance(page[0], dict) and issubclass(serializer_class, LeanReadMixin):
            # Rows are rendered without serializer instances: a ListSerializer and its
            # child point at each other, and that cycle would hold the page.
            return [
                row.fragment if type(row) is JSONRow else serializer_class.render_row(row)
                for row in page
            ]
        return self.get_serializer(page, many=True).data

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
