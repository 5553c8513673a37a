from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from audit.events import EventType
from core.db import DbNow
from hosts.models import Host

# Re-exported: `from migrations_app.models import MigrationStatus` (and the rest) works.
from migrations_app.domain.convergence import ConvergencePolicy
from migrations_app.domain.lifecycle import (  # noqa: F401
    ACTIVE_STATUSES,
    ALLOWED_TRANSITIONS,
    BATCH_FINAL_STATUSES,
    FINAL_STATUSES,
    RUNNING_STATUSES,
    BatchStatus,
    FailureReason,
    MigrationStatus,
    Phase,
)
from migrations_app.domain.options import (  # noqa: F401
    CompressionMethod,
    StorageMode,
    TransportMode,
)


class BatchKind(models.TextChoices):
    BATCH = "batch", pgettext_lazy("batch kind", "Batch")
    EVACUATION = "evacuation", pgettext_lazy("batch kind", "Host evacuation")


class MigrationBatch(models.Model):
    """Several migrations requested together, at most `max_parallel` running at once."""

    kind = models.CharField(max_length=16, choices=BatchKind.choices, default=BatchKind.BATCH)
    host = models.ForeignKey(
        Host, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.QUEUED
    )
    stop_on_failure = models.BooleanField(default=False)
    max_parallel = models.PositiveIntegerField(default=1)
    options = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status in BATCH_FINAL_STATUSES


class Migration(models.Model):
    """One request to move one VM; its lifecycle, progress and outcome."""

    # The VM is kept by UUID and name: inventory rows come and go, history stays.
    vm_uuid = models.UUIDField(db_index=True)
    vm_name = models.CharField(max_length=255)
    source = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="outgoing_migrations")
    destination = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="incoming_migrations"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150)
    status = models.CharField(
        max_length=16, choices=MigrationStatus.choices, default=MigrationStatus.QUEUED
    )
    batch = models.ForeignKey(
        MigrationBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )

    live = models.BooleanField(default=True)
    storage = models.CharField(
        max_length=8, choices=StorageMode.choices, default=StorageMode.SHARED
    )
    transport = models.CharField(
        max_length=16, choices=TransportMode.choices, default=TransportMode.DIRECT
    )
    delete_source = models.BooleanField(default=False)
    bandwidth_mib_s = models.PositiveIntegerField(default=0)
    max_downtime_ms = models.PositiveIntegerField()
    auto_converge = models.BooleanField(default=False)
    allow_postcopy = models.BooleanField(default=False)
    compressed = models.BooleanField(default=False)
    compression_method = models.CharField(
        max_length=8, choices=CompressionMethod.choices, default=CompressionMethod.XBZRLE
    )
    compression_level = models.PositiveSmallIntegerField(null=True, blank=True)
    tls = models.BooleanField(default=False, help_text="QEMU's migration stream encrypted (TLS).")
    parallel_connections = models.PositiveIntegerField(default=0)
    new_name = models.CharField(max_length=255, blank=True)
    timeout_s = models.PositiveIntegerField()
    convergence_policy = models.CharField(
        max_length=24, choices=ConvergencePolicy.choices, default=ConvergencePolicy.NONE
    )

    # Not started before `not_before`; failed (window_closed) if not started by `window_end`.
    not_before = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, blank=True)  # worker that owns it
    # Fencing token raised by every claim and takeover: only its holder writes.
    claim_epoch = models.PositiveIntegerField(default=0)
    # Last handed to the broker (None: never); the reconciler re-enqueues a lost task.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # A shut-off definition there before (it comes home): a failure leaves it defined.
    destination_had_definition = models.BooleanField(default=False)
    source_was_paused = models.BooleanField(default=False)
    # Defined (persistent) on the source when requested, as the inventory had it (None:
    # not known): a definition removed outside the portal meanwhile is not recreated.
    source_was_persistent = models.BooleanField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    postcopy_started_at = models.DateTimeField(null=True, blank=True)
    checks = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    failure_reason = models.CharField(max_length=16, choices=FailureReason.choices, blank=True)
    # A leftover on a host that could not be reached yet; the reconciler retries.
    needs_cleanup = models.BooleanField(default=False)

    # The latest progress sample.
    phase = models.CharField(max_length=32, choices=Phase.choices, blank=True)
    percent = models.FloatField(default=0)
    data_total_bytes = models.BigIntegerField(null=True, blank=True)
    data_processed_bytes = models.BigIntegerField(null=True, blank=True)
    data_remaining_bytes = models.BigIntegerField(null=True, blank=True)
    memory_dirty_rate_bytes_s = models.BigIntegerField(null=True, blank=True)
    memory_iteration = models.PositiveIntegerField(null=True, blank=True)
    throughput_bytes_s = models.BigIntegerField(null=True, blank=True)
    # Copied disks (storage "copy"); null when libvirt reports no disk job.
    disk_total_bytes = models.BigIntegerField(null=True, blank=True)
    disk_processed_bytes = models.BigIntegerField(null=True, blank=True)
    disk_remaining_bytes = models.BigIntegerField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    progress_updated_at = models.DateTimeField(null=True, blank=True)
    # virDomainMigrateGetMaxDowntime, read back after every set and tune.
    max_downtime_read_ms = models.BigIntegerField(null=True, blank=True)
    # virDomainMigrateGetMaxSpeed, read back when the job starts and after every tune.
    bandwidth_read_mib_s = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The bandwidth libvirt has for the running migration (MiB/s), read back "
        "when it starts and after every tune; 8388607 or more: unlimited.",
    )
    # domain/convergence.judge on the samples: the plain verdict and the remaining memory
    # at the start of each pass (bytes), for the progress view.
    convergence_note = models.CharField(
        max_length=200,
        blank=True,
        help_text='The verdict in words, e.g. "not converging: the guest changes 9 MiB/s, the '
        'link moves 10 MiB/s"; eta_s is given only while converging.',
    )
    remaining_trend_bytes = models.JSONField(
        default=list,
        blank=True,
        help_text="The remaining memory (bytes) at the start of each pass from the second: "
        "falling while the copy converges.",
    )
    # The guest was paused by pause_when_stalled (not by a person): a failure resumes it.
    paused_for_convergence_at = models.DateTimeField(null=True, blank=True)
    # Someone (not the portal) paused the VM while it migrated: it ends paused, wherever.
    paused_outside_at = models.DateTimeField(null=True, blank=True)

    # libvirt's completed job statistics, exactly as reported, and the key figures.
    completed_stats = models.JSONField(null=True, blank=True)
    total_time_ms = models.BigIntegerField(null=True, blank=True)
    downtime_ms = models.BigIntegerField(null=True, blank=True)
    setup_time_ms = models.BigIntegerField(null=True, blank=True)
    transferred_bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            (
                "migrate_vm",
                "Can migrate VMs and control migrations and batches "
                "(cancel, tune, post-copy, reschedule)",
            )
        ]
        constraints = [
            # Two simultaneous requests for one VM: the database lets exactly one in.
            models.UniqueConstraint(
                fields=["vm_uuid"],
                condition=Q(status__in=ACTIVE_STATUSES),
                name="one_active_migration_per_vm",
            )
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # The list's order (/api/migrations/, keyset pages): one index range read.
            models.Index(fields=["created_at", "id"], name="migration_time_idx"),
        ]

    def __str__(self) -> str:
        return f"migration {self.pk}: {self.vm_name} {self.source} -> {self.destination}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


def heartbeat_stale() -> Q:
    """No heartbeat for MIGRATION_STALE_AFTER_S (or none at all), on the database's clock:
    the worker may run on another node, whose clock is not this one's."""
    stale_before = DbNow() - timedelta(seconds=settings.MIGRATION_STALE_AFTER_S)
    return Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale_before)


class MigrationSample(models.Model):
    """One progress sample of a running migration (for charts and for the record)."""

    migration = models.ForeignKey(Migration, on_delete=models.CASCADE, related_name="samples")
    taken_at = models.DateTimeField()
    elapsed_ms = models.BigIntegerField()
    phase = models.CharField(max_length=32, choices=Phase.choices)
    percent = models.FloatField()
    data_total_bytes = models.BigIntegerField(null=True)
    data_processed_bytes = models.BigIntegerField(null=True)
    data_remaining_bytes = models.BigIntegerField(null=True)
    memory_dirty_rate_bytes_s = models.BigIntegerField(null=True)
    memory_iteration = models.PositiveIntegerField(null=True)
    throughput_bytes_s = models.BigIntegerField(null=True)
    disk_total_bytes = models.BigIntegerField(null=True)
    disk_processed_bytes = models.BigIntegerField(null=True)
    disk_remaining_bytes = models.BigIntegerField(null=True)

    class Meta:
        ordering = ["migration", "taken_at", "id"]

    def __str__(self) -> str:
        return f"{self.migration_id} @{self.elapsed_ms} ms: {self.percent}%"


class WebhookEvent(models.TextChoices):
    """What a webhook endpoint may subscribe to (the final-status audit event types)."""

    MIGRATION_SUCCEEDED = EventType.MIGRATION_SUCCEEDED.value, _("Migration succeeded")
    MIGRATION_FAILED = EventType.MIGRATION_FAILED.value, _("Migration failed")
    MIGRATION_CANCELLED = EventType.MIGRATION_CANCELLED.value, _("Migration cancelled")
    BATCH_FINISHED = EventType.BATCH_FINISHED.value, _("Batch finished")


class WebhookEndpoint(models.Model):
    """Where the portal POSTs the end of migrations and batches."""

    url = models.URLField(max_length=500)
    secret_encrypted = models.TextField(editable=False)
    events = models.JSONField(default=list)
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by_name = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.pk}: {self.url}"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", pgettext_lazy("webhook delivery status", "Pending")
    DELIVERED = "delivered", pgettext_lazy("webhook delivery status", "Delivered")
    FAILED = "failed", pgettext_lazy("webhook delivery status", "Failed")


class WebhookDelivery(models.Model):
    """One event for one endpoint, retried by the reconciler until delivered or failed."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"delivery {self.pk}: {self.event} -> {self.endpoint_id}"
