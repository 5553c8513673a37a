from django.contrib import admin

from audit import accounts_admin  # noqa: F401 (users, groups and tokens, audited)
from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: events are looked at, never added, changed or deleted here."""

    list_display = [
        "occurred_at",
        "event_type",
        "actor_name",
        "source_ip",
        "target_repr",
        "host_name",
        "vm_name",
    ]
    list_filter = ["event_type", "auth_method", "target_type"]
    search_fields = ["actor_name", "target_repr", "request_id", "host_name", "vm_name"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # no COUNT(*) over the whole log on every page
    actions = None  # not even "delete selected"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
