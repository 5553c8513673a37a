from vms.models import VM


def vm_get_preferred(*, uuid: str) -> VM | None:
    """The definition of `uuid` that /api/vms/{uuid}/ stands for: running first."""
    return (
        VM.objects.filter(uuid=uuid)
        .select_related("host")
        .prefetch_related("disks")
        .preferred_first()
        .first()
    )
