from django.http import Http404
from rest_framework import viewsets

from vms.api.serializers import VMDetailSerializer, VMSerializer
from vms.filters import VMFilterSet
from vms.models import VM
from vms.selectors import vm_get_preferred


class VMViewSet(viewsets.ReadOnlyModelViewSet):
    """VM inventory, synced from libvirt. Addressed by libvirt UUID."""

    queryset = VM.objects.select_related("host").prefetch_related("disks")
    filterset_class = VMFilterSet
    lookup_field = "uuid"
    lookup_value_regex = "[0-9a-fA-F-]{32,36}"

    def get_serializer_class(self):
        return VMDetailSerializer if self.action == "retrieve" else VMSerializer

    def get_object(self) -> VM:
        vm = vm_get_preferred(uuid=self.kwargs["uuid"])
        if vm is None:
            raise Http404("No VM with this UUID.")
        self.check_object_permissions(self.request, vm)
        return vm
