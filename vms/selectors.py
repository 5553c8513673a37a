from django.db.models import IntegerField, QuerySet
from django.db.models.expressions import RawSQL

from hosts.models import Host
from hosts.selectors import scoped
from vms.models import VM, VMState


def _vm_count(condition: str, *params: str) -> RawSQL:
    """A host's VMs meeting `condition` (SQL over `counted`), counted in plain SQL: two ORM
    Subqueries were a third of the host list's CPU (docs/performance.md)."""
    return RawSQL(
        f'SELECT count(*) FROM "{VM._meta.db_table}" AS counted '
        f'WHERE counted."host_id" = "{Host._meta.db_table}"."id" AND {condition}',
        params,
        output_field=IntegerField(),
    )


def hosts_with_vm_counts() -> QuerySet[Host]:
    """Hosts by name with `vm_count` (not gone) and `running_vm_count`, by subqueries (not
    a grouped join: a page's count() and one host's detail then count only what they need)."""
    return Host.objects.annotate(
        vm_count=_vm_count('counted."state" <> %s', VMState.GONE),
        running_vm_count=_vm_count('counted."state" = %s', VMState.RUNNING),
    ).order_by("name")


def vms_listed() -> QuerySet[VM]:
    """The VM list as the API shows it: with the disks, and of the host only its name."""
    fields = [f.name for f in VM._meta.concrete_fields]
    return (
        VM.objects.select_related("host")
        .only(*fields, "host__name", "host__group")
        .prefetch_related("disks")
    )


def vm_current_with_host(*, uuid: str) -> VM | None:
    """The definition of `uuid` /api/vms/{uuid}/ stands for (running first), with its host
    and disks; None if there is none or it is gone."""
    vms = VM.objects.filter(uuid=uuid).select_related("host").prefetch_related("disks")
    vm = vms.preferred_first().first()
    return None if vm is None or vm.state == VMState.GONE else vm


def vm_current_with_host_name(*, uuid: str) -> VM | None:
    """As vm_current_with_host, with only the host's name (a Host row is costly to load)."""
    vm = vms_listed().filter(uuid=uuid).preferred_first().first()
    return None if vm is None or vm.state == VMState.GONE else vm


def vm_other_definitions(vm: VM, user=None) -> list[dict]:
    """The VM's definitions on other hosts (of the host groups `user` sees, if given)."""
    rows = VM.objects.filter(uuid=vm.uuid).exclude(pk=vm.pk)
    if user is not None:
        rows = scoped(rows, user, group_field="host__group_id")
    return [
        {"host": host, "state": state, "persistent": persistent}
        for host, state, persistent in rows.values_list("host__name", "state", "persistent")
    ]
