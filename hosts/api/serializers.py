from rest_framework import serializers

from core.api.rows import LeanReadMixin
from hosts.models import LIBVIRT_URI_SQL, Host, PeerTrust, Transport, libvirt_uri_of
from hosts.validators import validate_uri_safe


# A host's own fields; the API serves it with its VM counts (vms.api.serializers).
class HostSerializer(LeanReadMixin, serializers.ModelSerializer):
    libvirt_uri = serializers.CharField(read_only=True)
    # In a list page read as rows (core.api.lists): from its columns.
    lean_row_values = {
        "libvirt_uri": (("transport", "address", "port", "ssh_user"), libvirt_uri_of),
    }
    lean_row_sql = {"libvirt_uri": LIBVIRT_URI_SQL}
    transport = serializers.ChoiceField(
        choices=Transport.choices,
        default=Transport.SSH,
        help_text="How the portal and the other hosts reach this host's libvirt. Default "
        "ssh (the host key is pinned on first contact); tcp is unauthenticated and "
        "unencrypted, for lab use only.",
    )
    port = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=65535)
    shared_storage_paths = serializers.ListField(
        child=serializers.CharField(max_length=1024), required=False
    )

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "address",
            "transport",
            "port",
            "ssh_user",
            "libvirt_uri",
            "shared_storage_paths",
            "ssh_host_key_fingerprint",
            "ssh_host_key_recorded_at",
            "ssh_host_key_pending_fingerprint",
            "ssh_host_key_pending_seen_at",
            "ssh_access_user",
            "ssh_access_set_up_at",
            "ssh_libvirt_via_sudo",
            "tls_ca_fingerprint",
            "tls_server_fingerprint",
            "tls_server_not_after",
            "tls_client_not_after",
            "tls_issued_at",
            "status",
            "maintenance",
            "maintenance_since",
            "maintenance_reason",
            "last_error",
            "last_error_at",
            "last_seen_at",
            "hostname",
            "arch",
            "cpu_model",
            "cpu_vendor",
            "cpu_count",
            "hypervisor_type",
            "hypervisor_version",
            "libvirt_version",
            "host_uuid",
            "memory_total_bytes",
            "memory_free_bytes",
            "migration_features",
            "capabilities_updated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            f
            for f in fields
            if f not in {"name", "address", "transport", "port", "ssh_user", "shared_storage_paths"}
        ]

    def validate_shared_storage_paths(self, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise serializers.ValidationError(f"'{path}' is not an absolute path.")
        return value


class MaintenanceSerializer(serializers.Serializer):
    """Enter or leave maintenance."""

    enabled = serializers.BooleanField(
        help_text="true: enter maintenance (the host takes no new VMs); false: leave it."
    )
    reason = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why (shown on the host's page and in the ranking); cleared on leaving.",
    )


class SshAccessSerializer(serializers.Serializer):
    """User and password for one login that installs the portal's key."""

    user = serializers.CharField(max_length=32, validators=[validate_uri_safe])
    password = serializers.CharField(write_only=True, trim_whitespace=False)


class AcceptHostKeySerializer(serializers.Serializer):
    """The fingerprint of the changed host key, as the administrator checked it."""

    fingerprint = serializers.CharField(
        max_length=64,
        help_text="The pending key's fingerprint (`ssh_host_key_pending_fingerprint`, "
        "e.g. SHA256:...), checked out of band; refused if the pending key is another.",
    )


class PortalKeySerializer(serializers.Serializer):
    public_key = serializers.CharField()
    fingerprint = serializers.CharField()


class PeerTrustSerializer(serializers.ModelSerializer):
    """A source host's own ssh access to a destination, for peer-to-peer migration."""

    source_name = serializers.CharField(source="source.name", read_only=True)
    destination_name = serializers.CharField(source="destination.name", read_only=True)

    class Meta:
        model = PeerTrust
        fields = [
            "id",
            "source",
            "source_name",
            "destination",
            "destination_name",
            "source_key",
            "source_key_fingerprint",
            "destination_user",
            "destination_host_key_fingerprint",
            "via_sudo",
            "authorized_keys_line",
            "known_hosts_line",
            "verified_at",
            "created_at",
        ]
        read_only_fields = fields


class PeerTrustRequestSerializer(serializers.Serializer):
    source = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())
    destination = serializers.PrimaryKeyRelatedField(queryset=Host.objects.all())

    def validate(self, attrs: dict) -> dict:
        if attrs["source"] == attrs["destination"]:
            raise serializers.ValidationError(
                {"destination": "A host does not need to trust itself."}
            )
        if attrs["destination"].transport != Transport.SSH:
            raise serializers.ValidationError(
                {
                    "destination": "Only a destination reached over ssh needs trust: tls hosts "
                    "use their certificates, tcp hosts nothing."
                }
            )
        return attrs


class TlsIssueSerializer(serializers.Serializer):
    """Issue (or renew) a host's TLS certificates over the portal's ssh session."""

    restart_libvirtd = serializers.BooleanField(
        default=True, help_text="Restart libvirtd afterwards (PORTAL_TLS_RESTART_COMMAND)."
    )
