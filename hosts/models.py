from urllib.parse import urlencode

from django.conf import settings
from django.db import models

from hosts.validators import validate_host_address, validate_uri_safe


class Transport(models.TextChoices):
    # ssh is the default: a host registered without a transport (by the API, or typed
    # into a migrate request) is reached over ssh with its host key pinned. Plain tcp
    # has neither authentication nor encryption: anyone who reaches the port owns libvirt.
    TCP = "tcp", "TCP — unauthenticated, for lab use"
    SSH = "ssh", "SSH"
    TLS = "tls", "TLS"


class HostStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not contacted yet"
    REACHABLE = "reachable", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"


DEFAULT_PORTS = {Transport.TCP: 16509, Transport.TLS: 16514, Transport.SSH: 22}


def ssh_port_of(transport: str, port: int | None) -> int:
    """The port ssh reaches a host on: its own port for an ssh host, else 22."""
    return port if transport == Transport.SSH and port else 22


def libvirt_uri_of(transport: str, address: str, port: int | None, ssh_user: str) -> str:
    """Host.libvirt_uri from the columns it is made of (also for rows read without a
    model instance, core.api.rows)."""
    address = f"[{address}]" if ":" in address else address
    port_part = f":{port}" if port else ""
    if transport == Transport.SSH:
        return f"qemu+ssh://{ssh_user}@{address}{port_part}/system"
    return f"qemu+{transport}://{address}{port_part}/system"


# libvirt_uri_of in PostgreSQL's SQL, over the same columns as {0}..{3} (pages the
# database renders: core.api.sql_rows).
LIBVIRT_URI_SQL = (
    "'qemu+' || {0} || '://'"
    " || CASE WHEN {0} = 'ssh' THEN {3} || '@' ELSE '' END"
    " || CASE WHEN strpos({1}, ':') > 0 THEN '[' || {1} || ']' ELSE {1} END"
    " || CASE WHEN {2} IS NOT NULL AND {2} <> 0 THEN ':' || {2} ELSE '' END"
    " || '/system'"
)


def _default_shared_paths() -> list[str]:
    return list(settings.SHARED_STORAGE_PATHS)


class Host(models.Model):
    """A libvirt hypervisor host the portal manages."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[validate_uri_safe],
        error_messages={"unique": "A host with this name already exists."},
    )
    address = models.CharField(
        max_length=253,
        unique=True,
        validators=[validate_host_address],
        help_text="Hostname or IP address the portal and other hosts reach it at.",
        error_messages={"unique": "A host with this address already exists."},
    )
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.SSH)
    port = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the transport's default port."
    )
    ssh_user = models.CharField(
        max_length=32, blank=True, default="root", validators=[validate_uri_safe]
    )
    shared_storage_paths = models.JSONField(
        default=_default_shared_paths,
        blank=True,
        help_text="Path prefixes on storage that every host sees (NFS and the like).",
    )

    # SSH: the host key pinned on first contact (trust on first use), a different key
    # seen since (refused until an administrator accepts it), and the user for whom the
    # portal's key was installed.
    ssh_host_key = models.TextField(blank=True, help_text="Pinned key: '<type> <base64>'.")
    ssh_host_key_fingerprint = models.CharField(max_length=64, blank=True)
    ssh_host_key_recorded_at = models.DateTimeField(null=True, blank=True)
    ssh_host_key_pending = models.TextField(blank=True)
    ssh_host_key_pending_fingerprint = models.CharField(max_length=64, blank=True)
    ssh_host_key_pending_seen_at = models.DateTimeField(null=True, blank=True)
    ssh_access_user = models.CharField(max_length=32, blank=True)
    ssh_access_set_up_at = models.DateTimeField(null=True, blank=True)
    # The ssh user is not in the host's libvirt group but may sudo: libvirt's remote
    # helper is run through `sudo -n` (the portal's wrapper; peers' forced command).
    ssh_libvirt_via_sudo = models.BooleanField(default=False)

    # TLS: the certificates the portal's CA last issued to the host (public parts only;
    # the private keys were generated on the host and never left it).
    tls_ca_fingerprint = models.CharField(max_length=128, blank=True)
    tls_server_cert = models.TextField(blank=True)
    tls_server_fingerprint = models.CharField(max_length=128, blank=True)
    tls_server_not_after = models.DateTimeField(null=True, blank=True)
    tls_client_cert = models.TextField(blank=True)
    tls_client_not_after = models.DateTimeField(null=True, blank=True)
    tls_issued_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.UNKNOWN)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    # Capabilities snapshot, re-read on every refresh.
    hostname = models.CharField(max_length=255, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    cpu_model = models.CharField(max_length=128, blank=True)
    cpu_vendor = models.CharField(max_length=64, blank=True)
    cpu_count = models.PositiveIntegerField(null=True, blank=True)
    hypervisor_type = models.CharField(max_length=32, blank=True)
    hypervisor_version = models.CharField(max_length=32, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    host_uuid = models.CharField(max_length=36, blank=True)
    memory_total_bytes = models.BigIntegerField(null=True, blank=True)
    memory_free_bytes = models.BigIntegerField(null=True, blank=True)
    migration_features = models.JSONField(default=dict, blank=True)
    capabilities_updated_at = models.DateTimeField(null=True, blank=True)

    # Maintenance: the host takes no new VMs (a pre-check refuses migrations to it, the
    # destination ranking marks it unfit); what runs there stays until evacuated.
    maintenance = models.BooleanField(default=False)
    maintenance_since = models.DateTimeField(null=True, blank=True)
    maintenance_reason = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        # The host admin role (docs/architecture.md, Roles): hosts.permissions.
        permissions = [
            (
                "manage_host",
                "Can manage hosts: register, change, remove, refresh, ssh access, "
                "host keys, TLS, maintenance, evacuation, peer trusts",
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[Transport(self.transport)]

    @property
    def libvirt_uri(self) -> str:
        """The URI the portal (and a source host, for peer-to-peer migration) connects to."""
        return libvirt_uri_of(self.transport, self.address, self.port, self.ssh_user)

    @property
    def ssh_port(self) -> int:
        return ssh_port_of(self.transport, self.port)

    @property
    def connection_uri(self) -> str:
        """The URI libvirt is actually opened with (by the portal, and by a source host
        for peer-to-peer migration). For ssh: the portal's key, and the portal's ssh
        wrapper that checks the host key against the keys pinned in the database. For
        tls: the portal's own client certificate folder (`pkipath`)."""
        if self.transport == Transport.TLS:
            return f"{self.libvirt_uri}?{urlencode({'pkipath': str(settings.TLS_CLIENT_DIR)})}"
        if self.transport != Transport.SSH:
            return self.libvirt_uri
        command = (
            settings.SSH_SUDO_COMMAND_PATH
            if self.ssh_libvirt_via_sudo
            else (settings.SSH_COMMAND_PATH)
        )
        query = urlencode({"keyfile": str(settings.SSH_KEY_PATH), "command": str(command)})
        return f"{self.libvirt_uri}?{query}"

    @property
    def tls_peer_uri(self) -> str:
        return tls_peer_uri(self)

    @property
    def has_tls_certificates(self) -> bool:
        return bool(self.tls_server_cert and self.tls_client_cert)

    def is_on_shared_storage(self, path: str) -> bool:
        return any(
            path == prefix or path.startswith(prefix.rstrip("/") + "/")
            for prefix in self.shared_storage_paths
        )


# Where a source host keeps the key pair it uses to reach its migration peers over ssh
# (libvirtd runs as root). Generated on the host; its private half never leaves it.
PEER_KEY_PATH = "/root/.ssh/portal_migration_ed25519"


class PeerTrust(models.Model):
    """A source host may open libvirt on a destination over ssh, for peer-to-peer
    migration: the source's own key is installed for the destination's ssh user (may
    only run libvirt's helper), and the destination's pinned host key is in the
    source's root known_hosts. Set up and removed by `hosts.peer_services`."""

    source = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="peer_trusts")
    destination = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="trusted_by")
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


def tls_peer_uri(destination: Host) -> str:
    """The URI a SOURCE host's libvirtd opens to `destination` for a peer-to-peer
    migration over TLS: no pkipath, so the source uses its own client certificate
    (/etc/pki/libvirt/clientcert.pem and private/clientkey.pem on the source)."""
    address = f"[{destination.address}]" if ":" in destination.address else destination.address
    port = destination.port if destination.transport == Transport.TLS and destination.port else None
    return f"qemu+tls://{address}{f':{port}' if port else ''}/system"


class CredentialKind(models.TextChoices):
    SSH_KEY = "ssh_key", "The portal's ssh key pair"
    TLS_CA = "tls_ca", "The portal's TLS certificate authority"
    TLS_CLIENT = "tls_client", "The portal's TLS client certificate"


class PortalCredential(models.Model):
    """One of the portal's own key pairs, the same for every portal node: the public
    half in the clear (an ssh public key line, or a PEM certificate), the private half
    (PEM) encrypted with Fernet under a key derived from SECRET_KEY, never in the clear.
    Read and written by `hosts.credentials` only; each node materialises the files it
    needs from these rows (docs/nodes.md)."""

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
