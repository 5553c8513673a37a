import uuid
from collections.abc import Callable

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from core.api.lists import LeanListMixin
from hosts import services
from hosts.access import ssh_services, tls_services
from hosts.api.serializers import (
    AcceptHostKeySerializer,
    MaintenanceSerializer,
    RetireSerializer,
    SshAccessSerializer,
    TlsIssueSerializer,
)
from hosts.models import Host, HostGroup, default_group_id
from hosts.permissions import CanManageHostsOrReadOnly, can_manage_group
from hosts.selectors import host_groups_visible, scoped
from vms.api.serializers import HostSerializer, VMDetailSerializer, VMSerializer
from vms.filters import VMFilterSet
from vms.models import VM
from vms.selectors import (
    hosts_with_vm_counts,
    vm_current_with_host,
    vm_current_with_host_name,
    vms_listed,
)
from vms.services import host_refresh


class HostViewSet(LeanListMixin, viewsets.ModelViewSet):
    """Hypervisor hosts. Each user reads the hosts of the host groups their roles cover;
    changes need the host admin role on the host's group."""

    # Here, not in hosts.api: a host is shown with its VM counts and its refresh syncs them.
    serializer_class = HostSerializer
    permission_classes = [CanManageHostsOrReadOnly]
    filterset_fields = ["status", "transport", "arch"]

    def get_queryset(self):
        hosts = scoped(hosts_with_vm_counts(), self.request.user, group_field="group_id")
        if self.action == "list" and not self._retired_listed():
            hosts = hosts.filter(retired=False)
        return hosts

    def _retired_listed(self) -> bool:
        """?retired=true lists retired hosts too; anything but true/false is a 400."""
        value = self.request.query_params.get("retired", "false")
        if value not in ("true", "false"):
            raise serializers.ValidationError({"retired": ["Not a boolean: true or false."]})
        return value == "true"

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "retired",
                bool,
                description="true: retired hosts are listed too (hidden by default).",
            )
        ]
    )
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def _group_check(self, group: HostGroup | None) -> None:
        """Putting a host into a group needs the host admin role on that group."""
        group_id = group.pk if group is not None else default_group_id()
        if not can_manage_group(self.request.user, group_id):
            name = group.name if group is not None else "default"
            raise PermissionDenied(
                f"group: putting a host into host group {name} needs the host admin role "
                "on that group (or globally)."
            )

    def perform_create(self, serializer: HostSerializer) -> None:
        self._group_check(serializer.validated_data.get("group"))
        serializer.instance = services.host_create(
            actor=Actor.from_request(self.request), **serializer.validated_data
        )

    def perform_update(self, serializer: HostSerializer) -> None:
        group = serializer.validated_data.get("group")
        if group is not None and group.pk != serializer.instance.group_id:
            self._group_check(group)
        serializer.instance = services.host_update(
            host=serializer.instance,
            actor=Actor.from_request(self.request),
            **serializer.validated_data,
        )

    @extend_schema(
        responses={
            204: None,
            409: OpenApiResponse(
                description="The host has migration history: retire it instead (kept)."
            ),
        }
    )
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Remove a host without migration history; 409 if migrations point at it (retire
        it instead: `POST /api/hosts/{id}/retire/`)."""
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance: Host) -> None:
        services.host_delete(host=instance, actor=Actor.from_request(self.request))

    def _host_change(
        self,
        request: Request,
        service: Callable[..., Host],
        serializer_class: type[serializers.Serializer] | None = None,
    ) -> Response:
        """`service(host=, actor=, **validated input)`, answered with the host as it is now."""
        data = {}
        if serializer_class is not None:
            serializer = serializer_class(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        host = service(host=self.get_object(), actor=Actor.from_request(request), **data)
        return Response(self.get_serializer(self.get_queryset().get(pk=host.pk)).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, pk: str | None = None) -> Response:
        """Reconnect, re-read capabilities and sync the host's VMs (waits for the host)."""
        return self._host_change(request, host_refresh)

    @extend_schema(request=SshAccessSerializer)
    @action(detail=True, methods=["post"], url_path="ssh-access")
    def ssh_access(self, request: Request, pk: str | None = None) -> Response:
        """Install the portal's ssh key for a remote user, logging in once with the
        password (never stored); afterwards the host is reached over qemu+ssh."""
        return self._host_change(request, ssh_services.host_ssh_access_set_up, SshAccessSerializer)

    @extend_schema(request=AcceptHostKeySerializer)
    @action(detail=True, methods=["post"], url_path="accept-host-key")
    def accept_host_key(self, request: Request, pk: str | None = None) -> Response:
        """Accept the host's changed ssh host key, given the fingerprint checked out of
        band: 400 on `fingerprint` if no key is pending or the pending one is another."""
        return self._host_change(request, ssh_services.host_key_accept, AcceptHostKeySerializer)

    @extend_schema(request=MaintenanceSerializer)
    @action(detail=True, methods=["post"])
    def maintenance(self, request: Request, pk: str | None = None) -> Response:
        """Enter (`enabled` true) or leave maintenance, audited. A host in maintenance
        takes no new VMs: migrations to it fail their pre-check
        `destination_not_in_maintenance` and the destination ranking lists it unfit.
        What runs there stays: `POST /api/hosts/{id}/evacuate/` moves it off."""
        return self._host_change(request, services.host_maintenance_set, MaintenanceSerializer)

    @extend_schema(request=RetireSerializer)
    @action(detail=True, methods=["post"])
    def retire(self, request: Request, pk: str | None = None) -> Response:
        """Retire a host (`retired` false: bring it back), audited. A retired host is kept
        for the history and the reports but takes no VMs (pre-check
        `destination_not_in_maintenance` refuses it, rankings and evacuation plans leave
        it out), is not polled nor listened to, and `GET /api/hosts/` hides it unless
        `?retired=true`."""
        return self._host_change(request, services.host_retired_set, RetireSerializer)

    @extend_schema(request=TlsIssueSerializer)
    @action(detail=True, methods=["post"], url_path="tls")
    def tls(self, request: Request, pk: str | None = None) -> Response:
        """Issue or renew the host's TLS certificates: the host makes its keys (they
        never leave it), the portal's CA signs them, they are installed for libvirtd
        and QEMU over ssh, and libvirtd is restarted. Needs ssh access set up."""
        return self._host_change(request, tls_services.host_tls_issue, TlsIssueSerializer)


class VMByUUIDMixin:
    """A view of one VM by libvirt UUID (the definition `vm_lookup` picks), else 404."""

    lookup_field = "uuid"
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"
    # What finds it: with the whole host (migrations need it) unless a view says less.
    vm_lookup = staticmethod(vm_current_with_host)

    def get_object(self) -> VM:
        try:
            vm = self.vm_lookup(uuid=str(uuid.UUID(self.kwargs["uuid"])))
        except ValueError:  # the path's pattern lets through what is not a UUID
            vm = None
        visible = host_groups_visible(self.request.user)
        if vm is None or (visible is not None and vm.host.group_id not in visible):
            raise Http404("No VM with this UUID.")
        self.check_object_permissions(self.request, vm)
        return vm


class VMViewSet(LeanListMixin, VMByUUIDMixin, viewsets.ReadOnlyModelViewSet):
    """VM inventory, synced from libvirt. Addressed by libvirt UUID."""

    # POST .../migrate/ and .../migrate/check/: migrations_app.api.views.VMMigrateViewSet.
    filterset_class = VMFilterSet
    vm_lookup = staticmethod(vm_current_with_host_name)  # only the host's name is shown

    def get_queryset(self):
        return scoped(vms_listed(), self.request.user, group_field="host__group_id")

    def get_serializer_class(self):
        return VMDetailSerializer if self.action == "retrieve" else VMSerializer
