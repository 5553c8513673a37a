"""Shape of the migration report (audit readers; migrations_app.reports builds it), for
the schema."""

from rest_framework import serializers


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
