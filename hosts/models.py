from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from hosts.access.models import SshAccess, TlsCertificates
from hosts.validators import validate_host_address, validate_uri_safe


class Transport(models.TextChoices):
    # ssh is the default; plain tcp has no authentication: whoever reaches it owns libvirt.
    TCP = "tcp", _("TCP — unauthenticated, for lab use")
    SSH = "ssh", _("SSH")
    TLS = "tls", _("TLS")


class HostStatus(models.TextChoices):
    UNKNOWN = "unknown", pgettext_lazy("host status", "Not contacted yet")
    REACHABLE = "reachable", pgettext_lazy("host status", "Reachable")
    UNREACHABLE = "unreachable", pgettext_lazy("host status", "Unreachable")


def ssh_port_of(transport: str, port: int | None) -> int:
    return port if transport == Transport.SSH and port else 22


def libvirt_uri_of(transport: str, address: str, port: int | None, ssh_user: str) -> str:
    """Host.libvirt_uri from its columns (also for rows read without a model instance)."""
    address = f"[{address}]" if ":" in address else address
    port_part = f":{port}" if port else ""
    if transport == Transport.SSH:
        return f"qemu+ssh://{ssh_user}@{address}{port_part}/system"
    return f"qemu+{transport}://{address}{port_part}/system"


# libvirt_uri_of in PostgreSQL, over the same columns as {0}..{3} (core.api.sql_rows).
LIBVIRT_URI_SQL = (
    "'qemu+' || {0} || '://'"
    " || CASE WHEN {0} = 'ssh' THEN {3} || '@' ELSE '' END"
    " || CASE WHEN strpos({1}, ':') > 0 THEN '[' || {1} || ']' ELSE {1} END"
    " || CASE WHEN {2} IS NOT NULL AND {2} <> 0 THEN ':' || {2} ELSE '' END"
    " || '/system'"
)


def _default_shared_paths() -> list[str]:
    return list(settings.SHARED_STORAGE_PATHS)


class Capabilities(models.Model):
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
    # The capabilities' <cpu> (model, vendor, features): a host-passthrough VM's source
    # CPU for libvirt's comparison, and the input of its group's CPU baseline.
    cpu_xml = models.TextField(blank=True)
    capabilities_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class Maintenance(models.Model):
    """A host in maintenance takes no new VMs; what runs there stays until evacuated."""

    maintenance = models.BooleanField(default=False)
    maintenance_since = models.DateTimeField(null=True, blank=True)
    maintenance_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        abstract = True


class Retirement(models.Model):
    """A retired host is kept for the history and the reports (its migrations point at
    it), but takes no VMs, is not polled and is left out of the lists."""

    retired = models.BooleanField(default=False)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


DEFAULT_GROUP_NAME = "default"


class HostGroup(models.Model):
    """Hosts that VMs move between (oVirt's cluster, Nova's aggregate): migrations,
    recommendations and evacuations stay inside one; roles can be granted on one."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[validate_uri_safe],
        error_messages={"unique": "A host group with this name already exists."},
    )
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # libvirt's baseline over the group's hosts' CPUs (baselineHypervisorCPU): the CPU
    # every host of the group can give a VM; recomputed on request.
    cpu_baseline_xml = models.TextField(blank=True)
    cpu_baseline_model = models.CharField(max_length=128, blank=True)
    cpu_baseline_hosts = models.JSONField(default=list, blank=True)
    cpu_baseline_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def default_group_id() -> int:
    """The group a host gets when none is named (migration 0011 put every host there)."""
    return HostGroup.objects.get_or_create(name=DEFAULT_GROUP_NAME)[0].pk


class GrantRole(models.TextChoices):
    # The roles that can be granted on a host group; the auditor stays global.
    VIEWER = "viewer", pgettext_lazy("role", "viewer")
    OPERATOR = "operator", pgettext_lazy("role", "operator")
    HOST_ADMIN = "host admin", pgettext_lazy("role", "host admin")


class HostGroupGrant(models.Model):
    """A role on one host group, for a user or for everyone in a Django group (NetBox's
    object permission, narrowed to the portal's roles)."""

    host_group = models.ForeignKey(HostGroup, on_delete=models.CASCADE, related_name="grants")
    role = models.CharField(max_length=16, choices=GrantRole.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="host_group_grants",
    )
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, null=True, blank=True, related_name="host_group_grants"
    )
    # "ldap": kept in step with the person's LDAP groups at each login (the others stay).
    source = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host_group__name", "role"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, group__isnull=True)
                    | models.Q(user__isnull=True, group__isnull=False)
                ),
                name="hostgroupgrant_user_xor_group",
            ),
            models.UniqueConstraint(
                fields=["host_group", "role", "user"],
                condition=models.Q(user__isnull=False),
                name="hostgroupgrant_unique_user",
            ),
            models.UniqueConstraint(
                fields=["host_group", "role", "group"],
                condition=models.Q(group__isnull=False),
                name="hostgroupgrant_unique_group",
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{self.role} on {self.host_group} for {who}"

    def as_dict(self) -> dict:
        return {
            "host_group": self.host_group.name,
            "role": self.role,
            "user": self.user.get_username() if self.user_id else None,
            "group": self.group.name if self.group_id else None,
        }


class Host(SshAccess, TlsCertificates, Capabilities, Maintenance, Retirement, models.Model):
    """A libvirt host the portal manages: how it is reached and whether it answered."""

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
    # No field default: a Host made in memory (the pure tests') must not ask the
    # database; save() puts a host without a group into "default".
    group = models.ForeignKey(
        HostGroup,
        on_delete=models.PROTECT,
        related_name="hosts",
        help_text="The host group: VMs move between the hosts of one group.",
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

    status = models.CharField(max_length=16, choices=HostStatus.choices, default=HostStatus.UNKNOWN)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            (
                "manage_host",
                "Can manage hosts: register, change, remove, refresh, ssh access, "
                "host keys, TLS, maintenance, evacuation, peer trusts",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if self.group_id is None:
            self.group_id = default_group_id()
        super().save(*args, **kwargs)

    @property
    def libvirt_uri(self) -> str:
        """The URI the portal (and a source host, for peer-to-peer migration) connects to."""
        return libvirt_uri_of(self.transport, self.address, self.port, self.ssh_user)

    @property
    def ssh_port(self) -> int:
        return ssh_port_of(self.transport, self.port)

    @property
    def connection_uri(self) -> str:
        """The URI the portal opens libvirt with: its key and ssh wrapper, or its pkipath."""
        if self.transport == Transport.TLS:
            return f"{self.libvirt_uri}?{urlencode({'pkipath': str(settings.TLS_CLIENT_DIR)})}"
        if self.transport != Transport.SSH:
            return self.libvirt_uri
        sudo = self.ssh_libvirt_via_sudo
        command = settings.SSH_SUDO_COMMAND_PATH if sudo else settings.SSH_COMMAND_PATH
        query = urlencode({"keyfile": str(settings.SSH_KEY_PATH), "command": str(command)})
        return f"{self.libvirt_uri}?{query}"

    def is_on_shared_storage(self, path: str) -> bool:
        return any(
            path == prefix or path.startswith(prefix.rstrip("/") + "/")
            for prefix in self.shared_storage_paths
        )
