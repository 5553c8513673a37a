from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.api.serializers import AuditEventSerializer
from audit.filters import AuditEventFilterSet
from audit.models import AuditEvent
from audit.permissions import CanReadAudit
from audit.selectors import AUDIT_MAX_PAGE_SIZE, audit_events_page


class AuditPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page.")
    results = AuditEventSerializer(many=True)


class AuditEventListView(APIView):
    """The audit log, newest first, filtered by time range, actor, event type, host and
    VM. Pages are read by keyset: follow `next` for older events (no total count, no
    page numbers: the log is large and keeps growing). Read-only."""

    permission_classes = [CanReadAudit]
    # Applied by audit_events_page; declared for the schema (portal.openapi).
    filterset_class = AuditEventFilterSet

    @extend_schema(
        operation_id="audit_list",
        parameters=[
            OpenApiParameter("cursor", str, description="From the `next` link of a page."),
            OpenApiParameter(
                "page_size",
                {"type": "integer", "minimum": 1, "maximum": AUDIT_MAX_PAGE_SIZE},
                description=f"Events per page (default 50, at most {AUDIT_MAX_PAGE_SIZE}).",
            ),
        ],
        responses=AuditPageSerializer,
    )
    def get(self, request: Request) -> Response:
        page = audit_events_page(params=request.query_params)
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
