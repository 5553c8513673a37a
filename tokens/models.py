"""Named API tokens (as NetBox's): an expiry, read-only or read-write, optionally limited
to source networks; only a hash of the secret is stored, the token is shown once."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The public half of the token ("mig_<key_id>.<secret>"): finds the row.
    key_id = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)  # HMAC-SHA256 of the secret, hex
    write_enabled = models.BooleanField(default=False)
    allowed_networks = models.JSONField(default=list, blank=True)  # CIDRs; empty: any
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"token {self.name!r} of {self.user}"
