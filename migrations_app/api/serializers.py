from django.conf import settings
from rest_framework import serializers

from hosts.validators import validate_uri_safe
from migrations_app.models import Migration, MigrationSample, StorageMode, TransportMode


class MigrateRequestSerializer(serializers.Serializer):
    """The migrate action's input; field names follow the Kimchi design."""

    remote_host = serializers.CharField(
        allow_blank=True,
        max_length=253,
        error_messages={"required": "Remote host field cannot be blank"},
        help_text="Destination: a registered host's name or address, or a new hostname/IP.",
    )
    user = serializers.CharField(required=False, allow_blank=True, max_length=32)
    password = serializers.CharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    delete_source = serializers.BooleanField(default=False)
    live = serializers.BooleanField(default=True)
    storage = serializers.ChoiceField(choices=StorageMode.choices, default=StorageMode.SHARED)
    transport = serializers.ChoiceField(choices=TransportMode.choices, default=TransportMode.DIRECT)
    bandwidth_mib_s = serializers.IntegerField(default=0, min_value=0, max_value=1_000_000)
    max_downtime_ms = serializers.IntegerField(required=False, max_value=3_600_000)
    auto_converge = serializers.BooleanField(default=False)
    allow_postcopy = serializers.BooleanField(default=False)
    compressed = serializers.BooleanField(default=False)
    parallel_connections = serializers.IntegerField(default=0, min_value=0, max_value=64)
    new_name = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=255,
        validators=[validate_uri_safe],
    )
    timeout_s = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.MIGRATION_TIMEOUT_MAX_S
    )

    def validate_remote_host(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Remote host field cannot be blank")
        return value.strip()

    def validate_max_downtime_ms(self, value: int) -> int:
        minimum = settings.MIGRATION_MIN_DOWNTIME_MS
        if value < minimum:
            raise serializers.ValidationError(
                f"Max downtime must be at least {minimum} ms: below that the VM may never converge."
            )
        return value

    def validate(self, attrs: dict) -> dict:
        user, password = attrs.get("user", ""), attrs.get("password", "")
        if bool(user) != bool(password):
            missing = "password" if user else "user"
            raise serializers.ValidationError(
                {missing: ["Both user and password fields must be filled"]}
            )
        if attrs["parallel_connections"] and attrs["transport"] == TransportMode.TUNNELLED:
            raise serializers.ValidationError(
                {"parallel_connections": ["Parallel connections cannot be tunnelled."]}
            )
        if attrs["compressed"] and attrs["parallel_connections"]:
            raise serializers.ValidationError(
                {"compressed": ["Compression and parallel connections exclude each other."]}
            )
        if not attrs["live"] and (attrs["allow_postcopy"] or attrs["auto_converge"]):
            raise serializers.ValidationError(
                {"live": ["Post-copy and auto-converge apply to live migrations only."]}
            )
        if not attrs["live"] and attrs["storage"] == StorageMode.COPY:
            raise serializers.ValidationError(
                {"storage": ["Disks can only be copied during a live migration."]}
            )
        return attrs


class TuneSerializer(serializers.Serializer):
    max_downtime_ms = serializers.IntegerField(required=False, max_value=3_600_000)
    bandwidth_mib_s = serializers.IntegerField(required=False, min_value=0, max_value=1_000_000)

    validate_max_downtime_ms = MigrateRequestSerializer.validate_max_downtime_ms

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give max_downtime_ms, bandwidth_mib_s or both."]}
            )
        return attrs


class MigrationSerializer(serializers.ModelSerializer):
    source = serializers.SlugRelatedField(slug_field="name", read_only=True)
    destination = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Migration
        exclude = ["requested_by", "claimed_by"]
        read_only_fields = [f.name for f in Migration._meta.fields]


class MigrationSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = MigrationSample
        exclude = ["id", "migration"]


# The migration report (audit readers; migrations_app.reports builds it).
class _Counts(serializers.Serializer):
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    active = serializers.IntegerField()


class _Reason(serializers.Serializer):
    reason = serializers.CharField(
        help_text="A failure_reason of the migrations (FailureReasonEnum); blank: none recorded."
    )
    label = serializers.CharField()
    count = serializers.IntegerField()
    example = serializers.CharField()


class _Stats(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    max = serializers.IntegerField(allow_null=True)


class _HostRow(serializers.Serializer):
    host = serializers.CharField()
    out = serializers.IntegerField()
    failed_out = serializers.IntegerField()
    failed_in = serializers.IntegerField()
    failed = serializers.IntegerField()

    def get_fields(self):
        fields = super().get_fields()
        fields["in"] = serializers.IntegerField()
        return fields


class _DayRow(serializers.Serializer):
    day = serializers.DateField()
    total = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class _Bucket(serializers.Serializer):
    lower_ms = serializers.IntegerField()
    upper_ms = serializers.IntegerField(allow_null=True)
    count = serializers.IntegerField()


class _Distributions(serializers.Serializer):
    duration_ms = _Bucket(many=True)
    downtime_ms = _Bucket(many=True)


class _Scope(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    filters = serializers.DictField()


class MigrationReportSerializer(serializers.Serializer):
    """Shape of the report (documentation for the schema; the view returns the dict)."""

    scope = _Scope()
    count = serializers.IntegerField()
    outcomes = _Counts()
    live = serializers.IntegerField()
    offline = serializers.IntegerField()
    success_rate = serializers.FloatField(
        allow_null=True, help_text="succeeded / (succeeded + failed)"
    )
    failures_by_reason = _Reason(many=True)
    duration_ms = _Stats()
    downtime_ms = _Stats()
    setup_time_ms_mean = serializers.FloatField(allow_null=True)
    transferred_bytes = serializers.IntegerField()
    per_host = _HostRow(many=True)
    per_day = _DayRow(many=True)
    distributions = _Distributions()
    percentile_method = serializers.CharField()
