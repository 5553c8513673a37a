from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from hosts.validators import validate_uri_safe
from migrations_app import decisions
from migrations_app.models import (
    CompressionMethod,
    Migration,
    MigrationSample,
    StorageMode,
    TransportMode,
)
from migrations_app.options import (
    COMPRESSION_MT_LEVEL_RANGE,
    FIELD_NAMES,
    NEW_NAME_MAX_LENGTH,
    RULES,
    MigrationOptions,
    limits,
)


class OptionIntegerField(serializers.IntegerField):
    """An integer option: parsed here; its limits are rules of `MigrationOptions`,
    checked there with its messages, and shown in the schema from the same table."""

    def __init__(self, *, option: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_value, self.max_value = limits()[option]


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date and time with its time zone (a time without one is refused:
    which zone was meant cannot be guessed)."""

    def to_internal_value(self, value):
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:  # well formed but no such date: the parent's message
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            raise serializers.ValidationError(
                "Give the time zone, e.g. 2026-11-23T22:00:00+01:00 or 2026-11-23T21:00:00Z."
            )
        return super().to_internal_value(value)


NOT_BEFORE_HELP = (
    "ISO 8601 with time zone. Start not before this time: until then the migration is "
    "`scheduled` (it holds no slot); in the past or empty: start now."
)
WINDOW_END_HELP = (
    "ISO 8601 with time zone, after not_before and in the future. If the migration has "
    "not started by then (e.g. waiting for a slot), it fails with failure_reason "
    "window_closed and nothing is moved."
)


class MigrateRequestSerializer(serializers.Serializer):
    """The migrate action's input; field names follow the Kimchi design.

    Besides each value's limits, these combinations of options are refused (400, on
    the field named):
    """

    remote_host = serializers.CharField(
        allow_blank=True,
        max_length=253,
        error_messages={"required": "Remote host field cannot be blank"},
        help_text="Destination: a registered host's name or address, or a new hostname/IP "
        "(registered by the migration, transport ssh).",
    )
    # Validated as the ssh-access request validates its user (it ends up in the
    # destination's qemu+ssh:// URI).
    user = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=32,
        validators=[validate_uri_safe],
        help_text="With password: set up password-less ssh for this remote user first "
        "(migrate only; migrate/check ignores both).",
    )
    password = serializers.CharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    delete_source = serializers.BooleanField(default=MigrationOptions.delete_source)
    live = serializers.BooleanField(default=MigrationOptions.live)
    storage = serializers.ChoiceField(choices=StorageMode.choices, default=MigrationOptions.storage)
    transport = serializers.ChoiceField(
        choices=TransportMode.choices, default=MigrationOptions.transport
    )
    bandwidth_mib_s = OptionIntegerField(
        option="bandwidth_mib_s",
        default=MigrationOptions.bandwidth_mib_s,
        help_text="MiB/s; 0: unlimited.",
    )
    max_downtime_ms = OptionIntegerField(
        option="max_downtime_ms",
        required=False,
        help_text="Default: PORTAL_MIGRATION_MAX_DOWNTIME_MS "
        f"({settings.MIGRATION_MAX_DOWNTIME_MS} ms).",
    )
    auto_converge = serializers.BooleanField(default=MigrationOptions.auto_converge)
    allow_postcopy = serializers.BooleanField(default=MigrationOptions.allow_postcopy)
    compressed = serializers.BooleanField(default=MigrationOptions.compressed)
    compression_method = serializers.ChoiceField(
        choices=CompressionMethod.choices,
        default=MigrationOptions.compression_method,
        help_text="With compressed: xbzrle (default) or mt. libvirt 9.0 has no zlib/zstd "
        "(multifd) compression.",
    )
    compression_level = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Method mt only: {} (none) to {} (best); empty: QEMU's 1.".format(
            *COMPRESSION_MT_LEVEL_RANGE
        ),
    )
    tls = serializers.BooleanField(
        default=MigrationOptions.tls,
        help_text="Encrypt QEMU's migration stream with TLS: both hosts need the portal's "
        "certificates (POST /api/hosts/{id}/tls/).",
    )
    parallel_connections = OptionIntegerField(
        option="parallel_connections",
        default=MigrationOptions.parallel_connections,
        help_text="0: one connection.",
    )
    new_name = serializers.CharField(
        required=False,
        allow_blank=True,
        default=MigrationOptions.new_name,
        max_length=NEW_NAME_MAX_LENGTH,
        help_text="The VM's name on the destination; empty: the same name.",
    )
    timeout_s = OptionIntegerField(
        option="timeout_s",
        required=False,
        help_text=f"Default: PORTAL_MIGRATION_TIMEOUT_S ({settings.MIGRATION_TIMEOUT_S} s).",
    )

    not_before = AwareDateTimeField(
        required=False, allow_null=True, default=None, help_text=NOT_BEFORE_HELP
    )
    window_end = AwareDateTimeField(
        required=False, allow_null=True, default=None, help_text=WINDOW_END_HELP
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The schema shows the level's range; MigrationOptions judges it (its message).
        level = self.fields["compression_level"]
        level.min_value, level.max_value = COMPRESSION_MT_LEVEL_RANGE

    def validate_remote_host(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Remote host field cannot be blank")
        return value.strip()

    def validate(self, attrs: dict) -> dict:
        """{remote_host, user, password, options}; a broken option rule raises Django's
        ValidationError, which DRF answers as 400 {field: [message]}."""
        user, password = attrs.get("user", ""), attrs.get("password", "")
        if bool(user) != bool(password):
            missing = "password" if user else "user"
            raise serializers.ValidationError(
                {missing: ["Both user and password fields must be filled"]}
            )
        # Judged here too, before the view registers a host or sets up ssh access.
        schedule = decisions.schedule_errors(
            not_before=attrs.get("not_before"),
            window_end=attrs.get("window_end"),
            now=timezone.now(),
        )
        if schedule:
            raise serializers.ValidationError(schedule)
        options = MigrationOptions(
            **{name: attrs.pop(name) for name in FIELD_NAMES if name in attrs}
        )
        return {**attrs, "options": options}


# The schema lists the rules from the one table (migrations_app.options.RULES).
MigrateRequestSerializer.__doc__ += "".join(
    f"\n    - {rule.field}: {rule.message}" for rule in RULES
)


def _optional(field: serializers.Field) -> serializers.Field:
    """The same field, not required and without a default (a change names only what
    it changes)."""
    kwargs = {k: v for k, v in field._kwargs.items() if k != "default"}
    return type(field)(*field._args, **{**kwargs, "required": False})


class MigrationChangeSerializer(serializers.Serializer):
    """PATCH of a scheduled migration: its schedule and/or any option of the migrate
    request; only the fields given change, and the options as changed are judged by
    the same rules (400 on the field named). 409 once the migration has started."""

    not_before = AwareDateTimeField(required=False, allow_null=True, help_text=NOT_BEFORE_HELP)
    window_end = AwareDateTimeField(
        required=False, allow_null=True, help_text=WINDOW_END_HELP + " null: no window end."
    )

    def get_fields(self):
        fields = super().get_fields()
        request_fields = MigrateRequestSerializer().get_fields()
        for name in FIELD_NAMES:
            fields[name] = _optional(request_fields[name])
        return fields

    def validate(self, attrs: dict) -> dict:
        if not attrs:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give not_before, window_end or an option to change."]}
            )
        return attrs


class TuneSerializer(serializers.Serializer):
    """New values for a running migration, within the limits of the migrate request."""

    max_downtime_ms = OptionIntegerField(option="max_downtime_ms", required=False)
    bandwidth_mib_s = OptionIntegerField(option="bandwidth_mib_s", required=False)

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
