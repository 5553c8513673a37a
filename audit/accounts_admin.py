"""Users, role groups and API tokens in the Django admin (registered by audit/admin.py,
after django.contrib.auth and DRF registered theirs), audited: these are the changes
an auditor needs most (who was given which role, when, by whom)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from audit.events import EventType
from audit.services import Actor, audit_event_record

User = get_user_model()
# What of a user is worth an auditor's look (never the password hash).
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff",
               "is_superuser")  # fmt: skip


def _actor(request) -> Actor:
    return Actor.from_request(request, auth_method="admin")


def _user_view(user) -> dict:
    return {name: getattr(user, name) for name in USER_FIELDS}


def _roles(user) -> dict:
    return {
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "permissions": sorted(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list(
                "content_type__app_label", "codename"
            )
        ),
    }


def _permissions(group: Group) -> list[str]:
    return sorted(
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    )


class AuditedUserAdmin(UserAdmin):
    def save_model(self, request, obj, form, change: bool) -> None:
        before = _user_view(User.objects.get(pk=obj.pk)) if change else None
        password_changed = "password" in form.changed_data or "password1" in form.changed_data
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            after = _user_view(obj)
            changed = [k for k in after if before is None or before[k] != after[k]]
            if change and not changed and not password_changed:
                return
            audit_event_record(
                actor=_actor(request),
                event_type=EventType.USER_UPDATED if change else EventType.USER_CREATED,
                target=obj,
                before={k: before[k] for k in changed} if before else None,
                after={k: after[k] for k in changed},
                detail={"password_changed": True} if password_changed else {},
            )

    def save_related(self, request, form, formsets, change: bool) -> None:
        user = form.instance
        before = _roles(user) if change else {"groups": [], "permissions": []}
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            after = _roles(user)
            if after != before:
                audit_event_record(
                    actor=_actor(request),
                    event_type=EventType.USER_ROLES_CHANGED,
                    target=user,
                    before=before,
                    after=after,
                )

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            audit_event_record(
                actor=_actor(request),
                event_type=EventType.USER_DELETED,
                target=obj,
                before={**_user_view(obj), **_roles(obj)},
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for user in queryset:
            self.delete_model(request, user)


class AuditedGroupAdmin(GroupAdmin):
    def save_related(self, request, form, formsets, change: bool) -> None:
        group = form.instance
        before = _permissions(group) if change else []
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            after = _permissions(group)
            if change and after == before and "name" not in form.changed_data:
                return
            audit_event_record(
                actor=_actor(request),
                event_type=EventType.GROUP_UPDATED if change else EventType.GROUP_CREATED,
                target=group,
                before={"permissions": before} if change else None,
                after={"name": group.name, "permissions": after},
            )

    def delete_model(self, request, obj: Group) -> None:
        with transaction.atomic():
            audit_event_record(
                actor=_actor(request),
                event_type=EventType.GROUP_DELETED,
                target=obj,
                before={"name": obj.name, "permissions": _permissions(obj)},
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for group in queryset:
            self.delete_model(request, group)


class AuditedTokenAdmin(TokenAdmin):
    """The key is never written to the log: the user it belongs to is."""

    def save_model(self, request, obj, form, change: bool) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if not change:
                audit_event_record(
                    actor=_actor(request),
                    event_type=EventType.TOKEN_CREATED,
                    target=obj.user,
                    after={"token_of": obj.user.get_username()},
                )

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            audit_event_record(
                actor=_actor(request),
                event_type=EventType.TOKEN_DELETED,
                target=obj.user,
                before={"token_of": obj.user.get_username()},
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for token in queryset:
            self.delete_model(request, token)


for model, model_admin in (
    (User, AuditedUserAdmin),
    (Group, AuditedGroupAdmin),
    (TokenProxy, AuditedTokenAdmin),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
