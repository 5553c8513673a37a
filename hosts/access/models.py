"""Host access columns (abstract models per concern), peer trusts, the portal's key pairs."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from hosts.validators import validate_ssh_host_key


class SshAccess(models.Model):
    """The pinned host key, a changed one awaiting acceptance, and the ssh access user."""

    ssh_host_key = models.TextField(
        blank=True,
        validators=[validate_ssh_host_key],
        help_text="Pinned key: '<type> <base64>'.",
    )
    ssh_host_key_fingerprint = models.CharField(max_length=64, blank=True)
    ssh_host_key_recorded_at = models.DateTimeField(null=True, blank=True)
    ssh_host_key_pending = models.TextField(blank=True, validators=[validate_ssh_host_key])
    ssh_host_key_pending_fingerprint = models.CharField(max_length=64, blank=True)
    ssh_host_key_pending_seen_at = models.DateTimeField(null=True, blank=True)
    ssh_access_user = models.CharField(max_length=32, blank=True)
    ssh_access_set_up_at = models.DateTimeField(null=True, blank=True)
    # The ssh user may not use libvirt but may sudo: libvirt's helper runs via `sudo -n`.
    ssh_libvirt_via_sudo = models.BooleanField(default=False)

    class Meta:
        abstract = True


class TlsCertificates(models.Model):
    """The certificates the portal's CA last issued to the host (public parts only)."""

    tls_ca_fingerprint = models.CharField(max_length=128, blank=True)
    tls_server_cert = models.TextField(blank=True)
    tls_server_fingerprint = models.CharField(max_length=128, blank=True)
    tls_server_not_after = models.DateTimeField(null=True, blank=True)
    tls_client_cert = models.TextField(blank=True)
    tls_client_not_after = models.DateTimeField(null=True, blank=True)
    tls_issued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def has_tls_certificates(self) -> bool:
        return bool(self.tls_server_cert and self.tls_client_cert)


# A source host's key pair for reaching its migration peers (libvirtd runs as root).
PEER_KEY_PATH = "/root/.ssh/portal_migration_ed25519"


class PeerTrust(models.Model):
    """A source host may open libvirt on a destination over ssh (peer-to-peer migration)."""

    source = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="peer_trusts")
    destination = models.ForeignKey(
        "hosts.Host", on_delete=models.CASCADE, related_name="trusted_by"
    )
    source_key = models.TextField(
        help_text="The source's public key line (its private key stays there)."
    )
    source_key_fingerprint = models.CharField(max_length=64)
    destination_user = models.CharField(max_length=32)
    destination_host_key_fingerprint = models.CharField(max_length=64)
    via_sudo = models.BooleanField(default=False)
    authorized_keys_line = models.TextField()
    known_hosts_line = models.TextField()
    verified_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["source__name", "destination__name"]
        constraints = [
            models.UniqueConstraint(fields=["source", "destination"], name="peer_trust_unique_pair")
        ]

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}"


class CredentialKind(models.TextChoices):
    SSH_KEY = "ssh_key", _("The portal's ssh key pair")
    TLS_CA = "tls_ca", _("The portal's TLS certificate authority")
    TLS_CLIENT = "tls_client", _("The portal's TLS client certificate")


class PortalCredential(models.Model):
    """One of the portal's key pairs for every node; the private half encrypted (credentials)."""

    kind = models.CharField(max_length=16, choices=CredentialKind.choices, unique=True)
    public = models.TextField()
    private_encrypted = models.TextField()
    fingerprint = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.fingerprint})"
