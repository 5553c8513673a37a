from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(PermissionError):
    """An attempt to change or delete audit events."""


class AuditEventQuerySet(models.QuerySet):
    """Reads only: every bulk change is refused (so does the database: audit.triggers)."""

    def update(self, **kwargs):
        raise AppendOnlyError("audit events are append-only: they cannot be changed")

    def delete(self):
        raise AppendOnlyError("audit events are append-only: they cannot be deleted")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError("audit events are append-only: they cannot be changed")

    def _raw_delete(self, using):
        raise AppendOnlyError("audit events are append-only: they cannot be deleted")

    delete.queryset_only = True


class AuditEvent(models.Model):
    """One append-only record of a change and who made it; the host and VM columns are
    copied in, so they filter by index and still read right once those rows are gone."""

    occurred_at = models.DateTimeField(default=timezone.now)
    event_type = models.CharField(max_length=64)  # e.g. "host.created"
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text so the trail survives the user's deletion; "system" for workers.
    actor_name = models.CharField(max_length=150)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    auth_method = models.CharField(max_length=16, blank=True)  # session, token, system
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    target_type = models.CharField(max_length=32)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255)
    # The host the event is about (a migration's source), and a migration's destination.
    host_name = models.CharField(max_length=64, blank=True)
    peer_host_name = models.CharField(max_length=64, blank=True)
    vm_uuid = models.UUIDField(null=True, blank=True)
    vm_name = models.CharField(max_length=255, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"]),
            # With each filter of the audit page in front: a page is an index range read.
            models.Index(fields=["occurred_at", "id"], name="audit_time_idx"),
            models.Index(fields=["event_type", "occurred_at", "id"], name="audit_type_time_idx"),
            models.Index(fields=["actor_name", "occurred_at", "id"], name="audit_actor_time_idx"),
            models.Index(fields=["host_name", "occurred_at", "id"], name="audit_host_time_idx"),
            models.Index(
                fields=["peer_host_name", "occurred_at", "id"], name="audit_peer_time_idx"
            ),
            models.Index(fields=["vm_uuid", "occurred_at", "id"], name="audit_vm_time_idx"),
            models.Index(fields=["vm_name", "occurred_at", "id"], name="audit_vmname_time_idx"),
            models.Index(
                fields=["host_name", "event_type", "occurred_at", "id"],
                name="audit_host_type_time_idx",
            ),
            models.Index(
                fields=["peer_host_name", "event_type", "occurred_at", "id"],
                name="audit_peer_type_time_idx",
            ),
        ]

    def __str__(self) -> str:
        when = f"{self.occurred_at:%Y-%m-%d %H:%M:%S}"
        return f"{when} {self.actor_name} {self.event_type} {self.target_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise AppendOnlyError("audit events are append-only: they cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events are append-only: they cannot be deleted")
