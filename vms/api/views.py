from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from hosts.api import views as host_views
from hosts.services import host_resolve_or_register
from hosts.ssh_services import SshAccessError, host_ssh_access_set_up
from migrations_app import services as migration_services
from migrations_app.api.serializers import MigrateRequestSerializer, MigrationSerializer
from migrations_app.api.views import Conflict
from vms.api.serializers import HostSerializer, VMDetailSerializer, VMSerializer
from vms.filters import VMFilterSet
from vms.models import VM, VMState
from vms.selectors import hosts_with_vm_counts, vm_get_preferred
from vms.services import host_refresh_with_vms

CHECKS_RESPONSE = inline_serializer(
    "MigrationChecks",
    {
        "ok": serializers.BooleanField(),
        "checks": serializers.ListField(child=serializers.DictField()),
    },
)


class HostViewSet(host_views.HostViewSet):
    """Hypervisor hosts. Reading needs a login; changes need an administrator."""

    # hosts.api.views.HostViewSet with what needs the VM inventory: VM counts, refresh.
    serializer_class = HostSerializer

    def get_queryset(self):
        return hosts_with_vm_counts()

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        """Reconnect, re-read capabilities and sync the host's VMs (waits for the host)."""
        host = host_refresh_with_vms(host=self.get_object(), actor=Actor.from_request(request))
        return self._host_response(host)


class VMViewSet(viewsets.ReadOnlyModelViewSet):
    """VM inventory, synced from libvirt. Addressed by libvirt UUID."""

    queryset = VM.objects.select_related("host").prefetch_related("disks")
    filterset_class = VMFilterSet
    lookup_field = "uuid"
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_permissions(self):
        if self.action in ("migrate", "migrate_check"):
            return [IsAuthenticated(), IsAdminUser()]
        return super().get_permissions()

    def get_serializer_class(self):
        return VMDetailSerializer if self.action == "retrieve" else VMSerializer

    def get_object(self) -> VM:
        vm = vm_get_preferred(uuid=self.kwargs["uuid"])
        if vm is None or vm.state == VMState.GONE:
            raise Http404("No VM with this UUID.")
        self.check_object_permissions(self.request, vm)
        return vm

    def _migration_input(self, request: Request):
        vm = self.get_object()
        serializer = MigrateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        actor = Actor.from_request(request)
        try:
            destination = host_resolve_or_register(remote_host=data.pop("remote_host"), actor=actor)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        user, password = data.pop("user", ""), data.pop("password", "")
        if user:
            # Used once, here, to set up password-less ssh; never queued or stored.
            try:
                destination = host_ssh_access_set_up(
                    host=destination, user=user, password=password, actor=actor
                )
            except SshAccessError as exc:
                raise ValidationError({exc.field: [str(exc)]}) from None
        return vm, destination, migration_services.MigrationOptions(**data), actor

    @extend_schema(request=MigrateRequestSerializer, responses={202: MigrationSerializer})
    @action(detail=True, methods=["post"])
    def migrate(self, request: Request, uuid: str | None = None) -> Response:
        """Queue a migration of this VM; answers 202 at once with the record."""
        vm, destination, options, actor = self._migration_input(request)
        try:
            migration = migration_services.migration_request(
                vm=vm, destination=destination, options=options, actor=actor
            )
        except migration_services.MigrationConflict as exc:
            raise Conflict(str(exc)) from exc
        location = f"/api/migrations/{migration.pk}/"
        return Response(
            MigrationSerializer(migration).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )

    @extend_schema(request=MigrateRequestSerializer, responses=CHECKS_RESPONSE)
    @action(detail=True, methods=["post"], url_path="migrate/check")
    def migrate_check(self, request: Request, uuid: str | None = None) -> Response:
        """Run the pre-checks of a migration without migrating."""
        vm, destination, options, _actor = self._migration_input(request)
        checks = migration_services.migration_check(vm=vm, destination=destination, options=options)
        return Response(
            {"ok": not any(c.failed for c in checks), "checks": [c.as_dict() for c in checks]}
        )
