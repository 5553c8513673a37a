from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from hosts import services
from hosts.api.serializers import HostSerializer
from hosts.models import Host
from portal.permissions import IsStaffOrReadOnly
from vms.models import VMState


def _as_drf_error(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


class HostViewSet(viewsets.ModelViewSet):
    """Hypervisor hosts. Reading needs a login; changes need an administrator."""

    serializer_class = HostSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_fields = ["status", "transport", "arch"]

    def get_queryset(self):
        return Host.objects.annotate(
            vm_count=Count("vms", filter=~Q(vms__state=VMState.GONE)),
            running_vm_count=Count("vms", filter=Q(vms__state=VMState.RUNNING)),
        ).order_by("name")

    def perform_create(self, serializer: HostSerializer) -> None:
        try:
            serializer.instance = services.host_create(
                actor=Actor.from_request(self.request), **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise _as_drf_error(exc) from exc

    def perform_update(self, serializer: HostSerializer) -> None:
        try:
            serializer.instance = services.host_update(
                host=serializer.instance,
                actor=Actor.from_request(self.request),
                **serializer.validated_data,
            )
        except DjangoValidationError as exc:
            raise _as_drf_error(exc) from exc

    def perform_destroy(self, instance: Host) -> None:
        services.host_delete(host=instance, actor=Actor.from_request(self.request))

    @extend_schema(request=None, responses=HostSerializer)
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        """Reconnect, re-read capabilities and sync the host's VMs (waits for the host)."""
        host = services.host_refresh(host=self.get_object(), actor=Actor.from_request(request))
        return Response(
            self.get_serializer(self.get_queryset().get(pk=host.pk)).data, status=status.HTTP_200_OK
        )
