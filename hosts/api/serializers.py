from rest_framework import serializers

from hosts.models import Host
from hosts.validators import validate_uri_safe


# A host's own fields; the API serves it with its VM counts (vms.api.serializers).
class HostSerializer(serializers.ModelSerializer):
    libvirt_uri = serializers.CharField(read_only=True)
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
            "tls_ca_fingerprint",
            "tls_server_fingerprint",
            "tls_server_not_after",
            "tls_client_not_after",
            "tls_issued_at",
            "status",
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


class SshAccessSerializer(serializers.Serializer):
    """User and password for one login that installs the portal's key."""

    user = serializers.CharField(max_length=32, validators=[validate_uri_safe])
    password = serializers.CharField(write_only=True, trim_whitespace=False)


class PortalKeySerializer(serializers.Serializer):
    public_key = serializers.CharField()
    fingerprint = serializers.CharField()


class TlsIssueSerializer(serializers.Serializer):
    """Issue (or renew) a host's TLS certificates over the portal's ssh session."""

    restart_libvirtd = serializers.BooleanField(
        default=True, help_text="Restart libvirtd afterwards (PORTAL_TLS_RESTART_COMMAND)."
    )
