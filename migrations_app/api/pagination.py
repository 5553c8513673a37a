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

    def get_page_size(self, request) -> int:
        # DRF falls back to the default on a bad value; here it is a 400 naming it, as
        # the audit log answers (an empty value is no choice: the default).
        value = request.query_params.get(self.page_size_query_param, "")
        if value == "":
            return self.page_size
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {self.page_size_query_param: [f"A number from 1 to {self.max_page_size}."]}
            )
        return size

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
                parameter["description"] = (
                    f"Migrations per page (default {self.page_size}, at most {self.max_page_size})."
                )
        return parameters
