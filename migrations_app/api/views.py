from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from migrations_app import services
from migrations_app.api.serializers import (
    MigrationSampleSerializer,
    MigrationSerializer,
    TuneSerializer,
)
from migrations_app.filters import MigrationFilterSet
from migrations_app.selectors import migrations_visible_to


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class MigrationViewSet(viewsets.ReadOnlyModelViewSet):
    """Migrations: history, live state, and control of the running ones."""

    serializer_class = MigrationSerializer
    filterset_class = MigrationFilterSet

    def get_queryset(self):
        return migrations_visible_to(self.request.user)

    def get_permissions(self):
        if self.action in ("cancel", "tune", "postcopy"):
            return [IsAuthenticated(), IsAdminUser()]
        return super().get_permissions()

    def _control(self, request: Request, call, **kwargs) -> Response:
        try:
            migration = call(
                migration=self.get_object(), actor=Actor.from_request(request), **kwargs
            )
        except services.MigrationConflict as exc:
            raise Conflict(str(exc)) from exc
        migration = self.get_queryset().get(pk=migration.pk)
        return Response(self.get_serializer(migration).data)

    @extend_schema(request=None, responses=MigrationSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Take a queued migration out of the queue, or abort a running one."""
        return self._control(request, services.migration_cancel)

    @extend_schema(request=TuneSerializer, responses=MigrationSerializer)
    @action(detail=True, methods=["post"])
    def tune(self, request: Request, pk: str | None = None) -> Response:
        """Change max downtime and/or bandwidth of a running migration."""
        serializer = TuneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._control(request, services.migration_tune, **serializer.validated_data)

    @extend_schema(request=None, responses=MigrationSerializer)
    @action(detail=True, methods=["post"])
    def postcopy(self, request: Request, pk: str | None = None) -> Response:
        """Switch a running migration that allows it to post-copy."""
        return self._control(request, services.migration_start_postcopy)

    @extend_schema(responses=MigrationSampleSerializer(many=True))
    @action(detail=True, methods=["get"])
    def samples(self, request: Request, pk: str | None = None) -> Response:
        """Every progress sample, oldest first."""
        samples = self.get_object().samples.order_by("taken_at", "id")
        return Response(MigrationSampleSerializer(samples, many=True).data)
