from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import reports
from audit.api.serializers import AuditEventSerializer, MigrationReportSerializer
from audit.filters import AuditEventFilterSet, MigrationReportFilterSet
from audit.models import AuditEvent
from audit.permissions import CanReadAudit
from audit.selectors import AUDIT_MAX_PAGE_SIZE, audit_events_page, migrations_for_report
from audit.streaming import download_response


class AuditPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page.")
    results = AuditEventSerializer(many=True)


def _filter_parameters(filterset_class) -> list[OpenApiParameter]:
    return [
        OpenApiParameter(name, str, description=str(f.extra.get("help_text", "")))
        for name, f in filterset_class.base_filters.items()
    ]


class AuditEventListView(APIView):
    """The audit log, newest first, filtered by time range, actor, event type, host and
    VM. Pages are read by keyset: follow `next` for older events (no total count, no
    page numbers: the log is large and keeps growing). Read-only."""

    permission_classes = [CanReadAudit]

    @extend_schema(
        operation_id="audit_list",
        parameters=[
            *_filter_parameters(AuditEventFilterSet),
            OpenApiParameter("cursor", str, description="From the `next` link of a page."),
            OpenApiParameter(
                "page_size",
                int,
                description=f"Events per page (default 50, at most {AUDIT_MAX_PAGE_SIZE}).",
            ),
        ],
        responses=AuditPageSerializer,
    )
    def get(self, request: Request) -> Response:
        try:
            page = audit_events_page(params=request.query_params)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        next_url = None
        if page.next_cursor:
            query = request.query_params.copy()
            query["cursor"] = page.next_cursor
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        results = AuditEventSerializer(page.events, many=True).data
        return Response({"next": next_url, "results": results})


class AuditEventViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One audit event. Read-only."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    permission_classes = [CanReadAudit]
    filter_backends: list = []


def _report_scope(request: Request):
    try:
        return migrations_for_report(params=request.query_params)
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict) from exc


_REPORT_PARAMETERS = _filter_parameters(MigrationReportFilterSet)


class MigrationReportView(APIView):
    """Migration figures for a time range (default: the last 30 days) and filters."""

    permission_classes = [CanReadAudit]

    @extend_schema(parameters=_REPORT_PARAMETERS, responses=MigrationReportSerializer)
    def get(self, request: Request) -> Response:
        migrations, scope = _report_scope(request)
        report = reports.migration_report_build(migrations=migrations)
        return Response({"scope": scope.as_dict(), **report})


class CSVRenderer(BaseRenderer):
    """Lets clients ask for text/csv; the export itself is a streamed response."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data)  # only errors get here


def _filename(scope, extension: str) -> str:
    return f"migrations_{scope.since:%Y%m%d}-{scope.until:%Y%m%d}.{extension}"


class MigrationExportCSVView(APIView):
    """Every migration of the report's scope as CSV: one row per migration, every field
    of the record and libvirt's completed statistics (columns `stats.*`). Streamed."""

    permission_classes = [CanReadAudit]
    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(parameters=_REPORT_PARAMETERS, responses={(200, "text/csv"): str})
    def get(self, request: Request):
        migrations, scope = _report_scope(request)
        return download_response(
            request,
            reports.migrations_csv_stream(migrations=migrations),
            content_type="text/csv; charset=utf-8",
            filename=_filename(scope, "csv"),
        )


class MigrationExportJSONView(APIView):
    """The same as the CSV export, as JSON: {"scope": ..., "migrations": [...]}. Streamed."""

    permission_classes = [CanReadAudit]

    @extend_schema(parameters=_REPORT_PARAMETERS, responses={(200, "application/json"): dict})
    def get(self, request: Request):
        migrations, scope = _report_scope(request)
        return download_response(
            request,
            reports.migrations_json_stream(migrations=migrations, scope=scope.as_dict()),
            content_type="application/json",
            filename=_filename(scope, "json"),
        )
