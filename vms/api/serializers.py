from rest_framework import serializers

from core.api.rows import LeanReadMixin
from hosts.api import serializers as host_serializers
from hosts.models import Host
from vms.models import VM, VMDisk, VMState
from vms.selectors import vm_other_definitions

_TIMES = ("created_at", "updated_at")


# hosts' serializer plus the counts of the host's VMs (vms.selectors.hosts_with_vm_counts
# annotates them; a host read otherwise is counted here).
class HostSerializer(host_serializers.HostSerializer):
    vm_count = serializers.SerializerMethodField()
    running_vm_count = serializers.SerializerMethodField()
    # A list page read as rows (LeanListMixin) holds hosts_with_vm_counts' annotations.
    lean_row_values = {
        **host_serializers.HostSerializer.lean_row_values,
        "vm_count": (("vm_count",), int),
        "running_vm_count": (("running_vm_count",), int),
    }
    lean_row_sql = {
        **host_serializers.HostSerializer.lean_row_sql,
        "vm_count": "{0}",
        "running_vm_count": "{0}",
    }

    class Meta(host_serializers.HostSerializer.Meta):
        fields = [
            *(f for f in host_serializers.HostSerializer.Meta.fields if f not in _TIMES),
            "vm_count",
            "running_vm_count",
            *_TIMES,
        ]

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
        return vm_other_definitions(vm)
