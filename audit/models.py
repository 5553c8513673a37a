from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One append-only record of something that changed, and who did it.

    Rows are written by services in the same transaction as the change they describe.
    """

    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    event_type = models.CharField(max_length=64, db_index=True)  # e.g. "host.created"
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
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        when = f"{self.occurred_at:%Y-%m-%d %H:%M:%S}"
        return f"{when} {self.actor_name} {self.event_type} {self.target_repr}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("audit events are append-only: they cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit events are append-only: they cannot be deleted")
