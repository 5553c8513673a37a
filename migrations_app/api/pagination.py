from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class MigrationCursorPagination(CursorPagination):
    """Keyset pages of the migration list, newest first: one index range read each, no
    total count (counting a long history costs more than the page)."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        # A foreign cursor is a bad query value: 400 naming it, as the audit log answers.
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise ValidationError({"cursor": ["Not a valid page cursor."]}) from exc
