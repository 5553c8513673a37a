from django.contrib import admin
from django.db import models

from audit.services import Actor
from hosts import group_services
from hosts.access.models import SshAccess, TlsCertificates
from hosts.models import Capabilities, Host, HostGroup, HostGroupGrant, Maintenance
from hosts.services import EDITABLE_FIELDS, host_create, host_delete, host_update


def _field_names(columns: type[models.Model]) -> list[str]:
    return [field.name for field in columns._meta.local_fields]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "group",
        "address",
        "transport",
        "status",
        "maintenance",
        "arch",
        "libvirt_version",
        "last_seen_at",
    ]
    list_filter = ["group", "status", "transport", "arch"]
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


def _actor(request) -> Actor:
    return Actor.from_request(request, auth_method="admin")


class HostGroupGrantInline(admin.TabularInline):
    """The group's grants, read here; granted and taken back on their own page (audited)."""

    model = HostGroupGrant
    fields = ["role", "user", "group", "source"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(HostGroup)
class HostGroupAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name"]
    fields = ["name", "description"]
    inlines = [HostGroupGrantInline]

    # Through the same services as the API, audited as the API is.
    def save_model(self, request, obj: HostGroup, form, change: bool) -> None:
        values = {name: form.cleaned_data[name] for name in self.fields}
        if change:
            saved = group_services.host_group_update(group=obj, actor=_actor(request), **values)
        else:
            saved = group_services.host_group_create(actor=_actor(request), **values)
        obj.pk = saved.pk

    def delete_model(self, request, obj: HostGroup) -> None:
        group_services.host_group_delete(group=obj, actor=_actor(request))

    def delete_queryset(self, request, queryset) -> None:
        for group in queryset:
            self.delete_model(request, group)


@admin.register(HostGroupGrant)
class HostGroupGrantAdmin(admin.ModelAdmin):
    """Grants are added and taken back, never edited (a change is one of each, audited)."""

    list_display = ["host_group", "role", "user", "group", "source", "created_at"]
    list_filter = ["host_group", "role", "source"]
    fields = ["host_group", "role", "user", "group"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj: HostGroupGrant, form, change: bool) -> None:
        data = form.cleaned_data
        saved = group_services.grant_create(
            actor=_actor(request),
            host_group=data["host_group"],
            role=data["role"],
            user=data.get("user"),
            group=data.get("group"),
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj: HostGroupGrant) -> None:
        group_services.grant_delete(grant=obj, actor=_actor(request))

    def delete_queryset(self, request, queryset) -> None:
        for grant in queryset.select_related("host_group", "user", "group"):
            self.delete_model(request, grant)
