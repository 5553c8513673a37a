import ipaddress

from rest_framework import serializers

from tokens.models import ApiToken


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = [
            "id", "name", "key_id", "write_enabled", "allowed_networks", "expires_at",
            "created_at", "last_used_at", "last_used_ip", "revoked_at",
        ]  # fmt: skip
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    write_enabled = serializers.BooleanField(
        default=False, help_text="false: the token may only read (GET, HEAD, OPTIONS)."
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Empty: it never expires."
    )
    allowed_networks = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        default=list,
        max_length=32,
        help_text="CIDRs the token may be used from, e.g. 127.0.0.0/8; empty: any.",
    )

    def validate_allowed_networks(self, value: list[str]) -> list[str]:
        networks = []
        for text in value:
            try:
                networks.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError as exc:
                raise serializers.ValidationError(f"{text!r} is not a network: {exc}") from exc
        return networks

    def validate_expires_at(self, value):
        from django.utils import timezone

        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        read_only=True, help_text="The token itself: shown this once, never stored."
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields
