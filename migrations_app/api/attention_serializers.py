"""The needs_attention view of a migration and a person's resolution of it."""

from rest_framework import serializers

from migrations_app.domain.attention import RESOLUTION_LABELS, Resolution

REASON_MAX_LENGTH = 500


class ResolveSerializer(serializers.Serializer):
    """Which resolution, and why (kept in the audit log and the record's error)."""

    action = serializers.ChoiceField(
        choices=[(r.value, RESOLUTION_LABELS[r]) for r in Resolution],
        help_text="One of the actions GET .../attention/ lists as safe.",
    )
    reason = serializers.CharField(
        max_length=REASON_MAX_LENGTH,
        trim_whitespace=True,
        help_text="Why, in a person's words (audited).",
    )

    def validate_action(self, value: str) -> Resolution:
        return Resolution(value)


class HostReportSerializer(serializers.Serializer):
    host = serializers.CharField()
    reachable = serializers.BooleanField()
    state = serializers.CharField(allow_null=True, help_text="null: no such VM on the host.")
    reason = serializers.CharField(help_text="libvirt's reason, e.g. postcopy_failed.")
    job_active = serializers.BooleanField(allow_null=True)
    persistent = serializers.BooleanField(allow_null=True)
    error = serializers.CharField(help_text="Why the host could not be read ('' if it answered).")


class ChoiceSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=[r.value for r in Resolution], source="resolution")
    label = serializers.SerializerMethodField()
    safe = serializers.BooleanField(help_text="Offered now; POST .../resolve/ checks it again.")
    why = serializers.CharField()
    host_actions = serializers.SerializerMethodField()

    def get_label(self, choice) -> str:
        return RESOLUTION_LABELS[choice.resolution]

    def get_host_actions(self, choice) -> list[str]:
        return [f"{a.op} on {a.side}" for a in choice.actions]


class AttentionSerializer(serializers.Serializer):
    """What each host says now about the VM, and every resolution with whether it is safe."""

    source = HostReportSerializer()
    destination = HostReportSerializer()
    choices = ChoiceSerializer(many=True)
