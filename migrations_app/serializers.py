"""How a migration, its samples and a batch read (API, live updates, pages)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.rows import LeanReadMixin
from migrations_app.domain.batch_rules import batch_progress
from migrations_app.domain.options import LiveFrom
from migrations_app.models import Migration, MigrationBatch, MigrationSample


class MigrationSerializer(LeanReadMixin, serializers.ModelSerializer):
    source = serializers.SlugRelatedField(slug_field="name", read_only=True)
    destination = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Migration
        exclude = ["requested_by", "claimed_by"]
        read_only_fields = [f.name for f in Migration._meta.fields]


class MigrationRequestedSerializer(MigrationSerializer):
    """The migrate request's answer: the record, and why it is live or offline."""

    live_from = serializers.ChoiceField(
        choices=LiveFrom.choices,
        read_only=True,
        help_text="request: `live` was given. default: not given, the VM was not shut off, "
        "so live. vm_shut_off: not given and the VM was shut off, so offline (`live` is "
        "false: only its definition moves).",
    )


class BatchChildSerializer(serializers.ModelSerializer):
    """A child migration as the batch shows it (the whole record: /api/migrations/{id}/)."""

    source = serializers.SlugRelatedField(slug_field="name", read_only=True)
    destination = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Migration
        fields = [
            "id",
            "vm_uuid",
            "vm_name",
            "source",
            "destination",
            "status",
            "phase",
            "percent",
            "storage",
            "data_total_bytes",
            "data_processed_bytes",
            "transferred_bytes",
            "failure_reason",
            "error",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class _BatchProgress(serializers.Serializer):
    vms_total = serializers.IntegerField()
    vms_done = serializers.IntegerField(help_text="Children in a final status.")
    vms_succeeded = serializers.IntegerField()
    vms_failed = serializers.IntegerField()
    vms_cancelled = serializers.IntegerField()
    vms_running = serializers.IntegerField()
    bytes_total = serializers.IntegerField(help_text="Data total of the children that started.")
    bytes_moved = serializers.IntegerField()
    percent = serializers.FloatField(help_text="Finished children count 100 %.")


class MigrationBatchSerializer(serializers.ModelSerializer):
    host = serializers.SlugRelatedField(
        slug_field="name",
        read_only=True,
        allow_null=True,
        help_text="The host an evacuation empties; null for other batches.",
    )
    progress = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField()

    class Meta:
        model = MigrationBatch
        exclude = ["created_by"]
        read_only_fields = [f.name for f in MigrationBatch._meta.fields]

    def _children(self, batch: MigrationBatch) -> list[Migration]:
        cache = self.context.setdefault("_children", {})
        if batch.pk not in cache:
            cache[batch.pk] = list(
                batch.children.select_related("source", "destination").order_by("pk")
            )
        return cache[batch.pk]

    @extend_schema_field(_BatchProgress)
    def get_progress(self, batch: MigrationBatch) -> dict:
        return batch_progress(self._children(batch)).as_dict()

    @extend_schema_field(BatchChildSerializer(many=True))
    def get_children(self, batch: MigrationBatch) -> list[dict]:
        return BatchChildSerializer(self._children(batch), many=True).data


class MigrationSampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = MigrationSample
        exclude = ["id", "migration"]
