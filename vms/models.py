from django.db import models
from django.utils.translation import pgettext_lazy

from hosts.hypervisor import UP_STATES
from hosts.models import Host


class VMState(models.TextChoices):
    """hosts.hypervisor.DomainState, and "gone" for a domain no longer on its host."""

    RUNNING = "running", pgettext_lazy("VM state", "Running")
    BLOCKED = "blocked", pgettext_lazy("VM state", "Blocked")
    PAUSED = "paused", pgettext_lazy("VM state", "Paused")
    SHUTTING_DOWN = "shutting_down", pgettext_lazy("VM state", "Shutting down")
    SHUT_OFF = "shut_off", pgettext_lazy("VM state", "Shut off")
    CRASHED = "crashed", pgettext_lazy("VM state", "Crashed")
    SUSPENDED = "suspended", pgettext_lazy("VM state", "Suspended (power management)")
    NO_STATE = "no_state", pgettext_lazy("VM state", "No state")
    GONE = "gone", pgettext_lazy("VM state", "Gone from the host")


class VMQuerySet(models.QuerySet):
    def present(self) -> "VMQuerySet":
        return self.exclude(state=VMState.GONE)

    def preferred_first(self) -> "VMQuerySet":
        """Order the definitions of one UUID: running before defined-only, gone last."""
        active = models.Case(
            models.When(state__in=list(UP_STATES), then=0),
            models.When(state=VMState.GONE, then=2),
            default=1,
        )
        return self.annotate(_rank=active).order_by("_rank", "-last_synced_at")


class VM(models.Model):
    """A libvirt domain as seen on one host, synced; a UUID defined on two hosts is two rows."""

    uuid = models.UUIDField(db_index=True)
    name = models.CharField(max_length=255)
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="vms")
    state = models.CharField(max_length=16, choices=VMState.choices)
    state_reason = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="libvirt's reason for the state, e.g. destroyed, shutdown, crashed "
        "(shut off); user, migration, postcopy (paused); booted, migrated (running).",
    )
    persistent = models.BooleanField()
    vcpus = models.PositiveIntegerField()
    memory_kib = models.BigIntegerField()
    max_memory_kib = models.BigIntegerField()
    arch = models.CharField(max_length=32, blank=True)
    machine_type = models.CharField(max_length=64, blank=True)
    domain_type = models.CharField(max_length=16, blank=True)
    has_hostdev = models.BooleanField(default=False)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_synced_at = models.DateTimeField()
    gone_at = models.DateTimeField(null=True, blank=True)

    objects = VMQuerySet.as_manager()

    class Meta:
        ordering = ["name", "host__name"]
        # The list's order: read by name from the index, the few equal names sorted by host.
        indexes = [
            models.Index(fields=["name"], name="vm_name_idx"),
            # A host's VM counts (vms.selectors.hosts_with_vm_counts): index-only reads.
            models.Index(fields=["host", "state"], name="vm_host_state_idx"),
        ]
        constraints = [models.UniqueConstraint(fields=["uuid", "host"], name="vm_unique_per_host")]

    def __str__(self) -> str:
        return f"{self.name} on {self.host.name}"

    @property
    def memory_mib(self) -> int:
        return self.memory_kib // 1024


class VMDisk(models.Model):
    vm = models.ForeignKey(VM, on_delete=models.CASCADE, related_name="disks")
    target = models.CharField(max_length=32)
    device = models.CharField(max_length=16, default="disk")
    path = models.CharField(max_length=1024, blank=True)
    format = models.CharField(max_length=16, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    on_shared_storage = models.BooleanField(default=False)

    class Meta:
        ordering = ["target"]
        constraints = [models.UniqueConstraint(fields=["vm", "target"], name="disk_unique_target")]

    def __str__(self) -> str:
        return f"{self.target}: {self.path}"
