from django.contrib import admin

from hosts.models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "address",
        "transport",
        "status",
        "maintenance",
        "arch",
        "libvirt_version",
        "last_seen_at",
    ]
    list_filter = ["status", "transport", "arch"]
    search_fields = ["name", "address", "hostname"]
    readonly_fields = [
        "status",
        "last_error",
        "last_error_at",
        "last_seen_at",
        "hostname",
        "arch",
        "cpu_model",
        "cpu_vendor",
        "cpu_count",
        "hypervisor_type",
        "hypervisor_version",
        "libvirt_version",
        "host_uuid",
        "memory_total_bytes",
        "memory_free_bytes",
        "migration_features",
        "capabilities_updated_at",
        # Issued through POST /api/hosts/{id}/tls/ only (the host must get them too).
        "tls_ca_fingerprint",
        "tls_server_cert",
        "tls_server_fingerprint",
        "tls_server_not_after",
        "tls_client_cert",
        "tls_client_not_after",
        "tls_issued_at",
        # Entered and left through POST /api/hosts/{id}/maintenance/ only (audited).
        "maintenance",
        "maintenance_since",
        "maintenance_reason",
    ]
