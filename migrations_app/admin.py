"""Webhooks in the Django admin: endpoints readable, deliveries read-only."""

from django.contrib import admin
from django.db import transaction

from audit.events import EventType
from audit.services import Actor, audit_event_record
from migrations_app.models import WebhookDelivery, WebhookEndpoint
from migrations_app.webhooks import webhook_endpoint_delete


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["id", "url", "events", "active", "created_at", "created_by_name"]
    list_filter = ["active"]
    # The secret is never shown; the API adds endpoints (it checks the URL).
    exclude = ["secret_encrypted"]
    readonly_fields = ["url", "events", "created_at", "created_by_name"]

    def has_add_permission(self, request) -> bool:
        return False

    # What the admin may change (active) is audited as the API's changes are.
    def save_model(self, request, obj: WebhookEndpoint, form, change: bool) -> None:
        before = WebhookEndpoint.objects.filter(pk=obj.pk).values("active").first() or {}
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if before.get("active") != obj.active:
                audit_event_record(
                    actor=Actor.from_request(request, auth_method="admin"),
                    event_type=EventType.WEBHOOK_UPDATED,
                    target=obj,
                    before=before,
                    after={"active": obj.active},
                )

    def delete_model(self, request, obj: WebhookEndpoint) -> None:
        actor = Actor.from_request(request, auth_method="admin")
        webhook_endpoint_delete(endpoint=obj, actor=actor)

    def delete_queryset(self, request, queryset) -> None:
        for endpoint in queryset:
            self.delete_model(request, endpoint)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event", "endpoint"]
    search_fields = ["last_error"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
