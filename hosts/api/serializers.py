from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import serializers

from hosts.access.models import PeerTrust
from hosts.models import GrantRole, Host, HostGroup, HostGroupGrant, Transport
from hosts.validators import validate_uri_safe


class RetireSerializer(serializers.Serializer):
    """Retire a host or bring it back."""

    retired = serializers.BooleanField(
        default=True,
        help_text="true (the default): retire the host; false: bring it back into service.",
    )


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


class HostGroupSerializer(serializers.ModelSerializer):
    """A host group: VMs move between the hosts of one group."""

    host_count = serializers.SerializerMethodField()

    class Meta:
        model = HostGroup
        fields = [
            "id",
            "name",
            "description",
            "host_count",
            "cpu_baseline_model",
            "cpu_baseline_hosts",
            "cpu_baseline_at",
            "cpu_baseline_xml",
            "created_at",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "description")]

    def get_host_count(self, group: HostGroup) -> int:
        return group.hosts.filter(retired=False).count()


class HostGroupGrantSerializer(serializers.ModelSerializer):
    """A role on a host group, for one user or for everyone in a Django group."""

    host_group = serializers.SlugRelatedField(
        slug_field="name", queryset=HostGroup.objects.all(), help_text="The host group's name."
    )
    role = serializers.ChoiceField(
        choices=GrantRole.choices,
        help_text="viewer, operator or host admin (the auditor is global only).",
    )
    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.all(),
        required=False,
        allow_null=True,
        help_text="The user's name; give either user or group.",
    )
    group = serializers.SlugRelatedField(
        slug_field="name",
        queryset=Group.objects.all(),
        required=False,
        allow_null=True,
        help_text="A Django group's name (everyone in it); give either user or group.",
    )

    class Meta:
        model = HostGroupGrant
        fields = ["id", "host_group", "role", "user", "group", "source", "created_at"]
        read_only_fields = ["id", "source", "created_at"]
        validators = []  # the unique constraints are judged by full_clean, naming the fields

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("user")) == bool(attrs.get("group")):
            raise serializers.ValidationError(
                {"user": ["Give either user or group (exactly one)."]}
            )
        return attrs
