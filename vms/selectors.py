from django.db.models import Count, Q, QuerySet

from hosts.models import Host
from vms.models import VM, VMState


def hosts_with_vm_counts() -> QuerySet[Host]:
    """Hosts by name, each with `vm_count` (not gone) and `running_vm_count`."""
    return Host.objects.annotate(
        vm_count=Count("vms", filter=~Q(vms__state=VMState.GONE)),
        running_vm_count=Count("vms", filter=Q(vms__state=VMState.RUNNING)),
    ).order_by("name")


def vm_get_preferred(*, uuid: str) -> VM | None:
    """The definition of `uuid` that /api/vms/{uuid}/ stands for: running first."""
    return (
        VM.objects.filter(uuid=uuid)
        .select_related("host")
        .prefetch_related("disks")
        .preferred_first()
        .first()
    )


def vm_get_present(*, uuid: str) -> VM | None:
    """As vm_get_preferred, but None when the preferred definition is gone: what the
    API and the pages answer 404 for."""
    vm = vm_get_preferred(uuid=uuid)
    return None if vm is None or vm.state == VMState.GONE else vm
