from rest_framework import serializers

from vms.models import VM, VMDisk


class VMDiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = VMDisk
        fields = ["target", "device", "path", "format", "size_bytes", "on_shared_storage"]


class VMSerializer(serializers.ModelSerializer):
    host = serializers.SlugRelatedField(slug_field="name", read_only=True)
    host_id = serializers.IntegerField(read_only=True)
    memory_mib = serializers.IntegerField(read_only=True)
    disks = VMDiskSerializer(many=True, read_only=True)

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
        others = VM.objects.filter(uuid=vm.uuid).exclude(pk=vm.pk).select_related("host")
        return [{"host": o.host.name, "state": o.state, "persistent": o.persistent} for o in others]
