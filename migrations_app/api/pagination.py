from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class MigrationCursorPagination(CursorPagination):
    """Keyset pages of the migration list, newest first: follow `next` (older) and
    `previous`. No total count and no page numbers: with a long history, counting every
    matching row on each page costs more than the page itself (docs/performance.md).
    Each page is one range read of the index on (created_at, id)."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        # A cursor that is not one of ours is a bad query value: 400 naming it, as the
        # audit log answers (DRF's own answer is a 404 without the parameter's name).
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise ValidationError({"cursor": ["Not a valid page cursor."]}) from exc
