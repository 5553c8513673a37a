from rest_framework import serializers

from core.api.rows import LeanReadMixin
from hosts.models import LIBVIRT_URI_SQL, Host, HostGroup, Transport, libvirt_uri_of
from hosts.services import EDITABLE_FIELDS
from vms.models import VM, VMDisk, VMState
from vms.selectors import vm_other_definitions


# A host with its VM counts. No docstring: the schema's Host component keeps its description.
class HostSerializer(LeanReadMixin, serializers.ModelSerializer):
    libvirt_uri = serializers.CharField(read_only=True)
    vm_count = serializers.SerializerMethodField()
    running_vm_count = serializers.SerializerMethodField()
    # In a list page read as rows (LeanListMixin): from its columns and annotations.
    lean_row_values = {
        "libvirt_uri": (("transport", "address", "port", "ssh_user"), libvirt_uri_of),
        "vm_count": (("vm_count",), int),
        "running_vm_count": (("running_vm_count",), int),
    }
    lean_row_sql = {"libvirt_uri": LIBVIRT_URI_SQL, "vm_count": "{0}", "running_vm_count": "{0}"}
    transport = serializers.ChoiceField(
        choices=Transport.choices,
        default=Transport.SSH,
        help_text="How the portal and the other hosts reach this host's libvirt. Default "
        "ssh (the host key is pinned on first contact); tcp is unauthenticated and "
        "unencrypted, for lab use only.",
    )
    group = serializers.SlugRelatedField(
        slug_field="name",
        queryset=HostGroup.objects.all(),
        required=False,
        help_text="The host group (by name; default: `default`). VMs move between the hosts "
        "of one group; putting a host in a group needs the host admin role on that group "
        "(and on its old one).",
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
            "group",
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
            "retired",
            "retired_at",
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
            "vm_count",
            "running_vm_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [f for f in fields if f not in EDITABLE_FIELDS]

    def validate_shared_storage_paths(self, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise serializers.ValidationError(f"'{path}' is not an absolute path.")
        return value

    def get_vm_count(self, host: Host) -> int:
        if hasattr(host, "vm_count"):
            return host.vm_count
        return host.vms.present().count()

    def get_running_vm_count(self, host: Host) -> int:
        if hasattr(host, "running_vm_count"):
            return host.running_vm_count
        return host.vms.filter(state=VMState.RUNNING).count()


class VMDiskSerializer(LeanReadMixin, serializers.ModelSerializer):
    class Meta:
        model = VMDisk
        fields = ["target", "device", "path", "format", "size_bytes", "on_shared_storage"]


class VMSerializer(LeanReadMixin, serializers.ModelSerializer):
    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    host_id = serializers.IntegerField(read_only=True)
    memory_mib = serializers.IntegerField(read_only=True)
    disks = VMDiskSerializer(many=True, read_only=True)
    # In a list page read as rows (core.api.lists): from its column.
    lean_row_values = {"memory_mib": (("memory_kib",), lambda kib: kib // 1024)}
    lean_row_sql = {"memory_mib": "{0} / 1024"}  # never negative: / truncates as // floors

    class Meta:
        model = VM
        fields = [
            "uuid",
            "name",
            "host",
            "host_id",
            "state",
            "state_reason",
            "persistent",
            "vcpus",
            "memory_kib",
            "memory_mib",
            "max_memory_kib",
            "arch",
            "machine_type",
            "domain_type",
            "has_hostdev",
            "disks",
            "first_seen_at",
            "last_synced_at",
            "gone_at",
        ]
        read_only_fields = fields


class VMDetailSerializer(VMSerializer):
    other_definitions = serializers.SerializerMethodField(
        help_text="The same UUID defined on other hosts (e.g. a kept source definition)."
    )

    class Meta(VMSerializer.Meta):
        fields = VMSerializer.Meta.fields + ["other_definitions"]
        read_only_fields = fields

    def get_other_definitions(self, vm: VM) -> list[dict]:
        request = self.context.get("request")
        return vm_other_definitions(vm, request.user if request else None)
