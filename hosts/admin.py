from django.contrib import admin
from django.db import models

from hosts.access.models import SshAccess, TlsCertificates
from hosts.models import Capabilities, Host, Maintenance
from hosts.services import EDITABLE_FIELDS


def _field_names(columns: type[models.Model]) -> list[str]:
    return [field.name for field in columns._meta.local_fields]


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
        *_field_names(Capabilities),
        # Issued through POST /api/hosts/{id}/tls/ only (the host must get them too).
        *_field_names(TlsCertificates),
        # Entered and left through POST /api/hosts/{id}/maintenance/ only (audited).
        *_field_names(Maintenance),
    ]
    # The change form: what the portal is told, then what it found out (read only).
    fields = [*EDITABLE_FIELDS, *_field_names(SshAccess), *readonly_fields]
