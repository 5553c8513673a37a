from django.db.models import IntegerField, QuerySet
from django.db.models.expressions import RawSQL

from hosts.models import Host
from vms.models import VM, VMState


def _vm_count(condition: str, *params: str) -> RawSQL:
    """The number of a host's VMs meeting `condition` (SQL over `counted`), for
    annotating Host rows. Plain SQL, not a Subquery of the ORM: building and compiling
    two of those was a third of the host list's CPU (docs/performance.md); count(*) of
    no row is 0."""
    return RawSQL(
        f'SELECT count(*) FROM "{VM._meta.db_table}" AS counted '
        f'WHERE counted."host_id" = "{Host._meta.db_table}"."id" AND {condition}',
        params,
        output_field=IntegerField(),
    )


def hosts_with_vm_counts() -> QuerySet[Host]:
    """Hosts by name, each with `vm_count` (not gone) and `running_vm_count`.

    Counted per host by subqueries (index vm_host_state_idx), not by a join grouped
    over every VM: a page's count() then leaves them out and counts hosts only, and
    one host's detail counts that host's VMs only."""
    return Host.objects.annotate(
        vm_count=_vm_count('counted."state" <> %s', VMState.GONE),
        running_vm_count=_vm_count('counted."state" = %s', VMState.RUNNING),
    ).order_by("name")


def vms_listed() -> QuerySet[VM]:
    """The VM list as the API shows it: with the disks and only the host's name (a Host
    row is ~45 columns, JSON and times to decode, for one name)."""
    fields = [f.name for f in VM._meta.concrete_fields]
    return VM.objects.select_related("host").only(*fields, "host__name").prefetch_related("disks")


def vm_current_with_host(*, uuid: str) -> VM | None:
    """The definition of `uuid` that /api/vms/{uuid}/ stands for (the running one
    first), with its whole host and its disks; None if there is none or it is gone
    (what the API and the pages answer 404 for)."""
    vm = (
        VM.objects.filter(uuid=uuid)
        .select_related("host")
        .prefetch_related("disks")
        .preferred_first()
        .first()
    )
    return None if vm is None or vm.state == VMState.GONE else vm


def vm_current_with_host_name(*, uuid: str) -> VM | None:
    """As vm_current_with_host, with only the host's name loaded (as vms_listed): what
    the API's VM detail shows. Compiling and decoding a whole Host row was half of the
    request's CPU."""
    vm = vms_listed().filter(uuid=uuid).preferred_first().first()
    return None if vm is None or vm.state == VMState.GONE else vm


def vm_other_definitions(vm: VM) -> list[dict]:
    """The other hosts' definitions of vm's UUID (e.g. a source definition kept after a
    migration): host name, state and persistence, in the VM list's order."""
    rows = VM.objects.filter(uuid=vm.uuid).exclude(pk=vm.pk)
    return [
        {"host": host, "state": state, "persistent": persistent}
        for host, state, persistent in rows.values_list("host__name", "state", "persistent")
    ]
