from rest_framework import serializers

from audit.models import AuditEvent
from core.api.rows import LeanReadMixin


class AuditEventSerializer(LeanReadMixin, serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "event_type",
            "actor",
            "actor_name",
            "source_ip",
            "auth_method",
            "request_id",
            "target_type",
            "target_id",
            "target_repr",
            "host_name",
            "peer_host_name",
            "vm_uuid",
            "vm_name",
            "before",
            "after",
            "detail",
        ]
        read_only_fields = fields
