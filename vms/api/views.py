import uuid

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from core.api.lists import LeanListMixin
from hosts.api import views as host_views
from vms.api.serializers import HostSerializer, VMDetailSerializer, VMSerializer
from vms.filters import VMFilterSet
from vms.models import VM
from vms.selectors import hosts_with_vm_counts, vm_get_present, vm_get_shown, vms_listed
from vms.services import host_refresh_with_vms


class HostViewSet(host_views.HostViewSet):
    """Hypervisor hosts. Reading needs a login; changes need the host admin role."""

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


class VMByUUIDMixin:
    """A view of one VM, addressed by libvirt UUID: the definition vm_get_present picks
    (the running one first), 404 if there is none or it is gone."""

    lookup_field = "uuid"
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"
    # What finds it: with the whole host (migrations need it) unless a view says less.
    vm_lookup = staticmethod(vm_get_present)

    def get_object(self) -> VM:
        try:
            vm = self.vm_lookup(uuid=str(uuid.UUID(self.kwargs["uuid"])))
        except ValueError:  # the path's pattern lets through what is not a UUID
            vm = None
        if vm is None:
            raise Http404("No VM with this UUID.")
        self.check_object_permissions(self.request, vm)
        return vm


class VMViewSet(LeanListMixin, VMByUUIDMixin, viewsets.ReadOnlyModelViewSet):
    """VM inventory, synced from libvirt. Addressed by libvirt UUID."""

    # POST .../migrate/ and .../migrate/check/: migrations_app.api.views.VMMigrateViewSet.
    filterset_class = VMFilterSet
    vm_lookup = staticmethod(vm_get_shown)  # only the host's name is shown

    def get_queryset(self):
        return vms_listed()

    def get_serializer_class(self):
        return VMDetailSerializer if self.action == "retrieve" else VMSerializer
