from django.contrib import admin
from django.db import models

from audit.services import Actor
from hosts.access.models import SshAccess, TlsCertificates
from hosts.models import Capabilities, Host, Maintenance
from hosts.services import EDITABLE_FIELDS, host_create, host_delete, host_update


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
        # The pinned host key and the ssh user: set up and accepted through the API's
        # ssh-access and accept-host-key actions only (checked, audited).
        *[name for name in _field_names(SshAccess) if name not in EDITABLE_FIELDS],
    ]
    # The change form: what the portal is told, then what it found out (read only).
    fields = [*EDITABLE_FIELDS, *readonly_fields]

    # Through the same services as the API: validated, and audited as the API is.
    def save_model(self, request, obj: Host, form, change: bool) -> None:
        data = form.cleaned_data
        values = {name: data[name] for name in EDITABLE_FIELDS if name in data}
        actor = Actor.from_request(request, auth_method="admin")
        if change:
            saved = host_update(host=obj, actor=actor, **values)
        else:
            saved = host_create(actor=actor, **values)
        obj.pk = saved.pk

    def delete_model(self, request, obj: Host) -> None:
        host_delete(host=obj, actor=Actor.from_request(request, auth_method="admin"))

    def delete_queryset(self, request, queryset) -> None:
        for host in queryset:
            self.delete_model(request, host)
