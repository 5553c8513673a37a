"""Changes made in the Django admin are audited as the API's are: hosts (through the same
services), webhooks, users and their roles, role groups and API tokens. The pinned host
key cannot be typed in there, and is validated wherever it is set."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from audit.models import AuditEvent
from hosts.models import Host
from hosts.validators import validate_ssh_host_key
from migrations_app.models import WebhookEndpoint

pytestmark = pytest.mark.django_db

GOOD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def host_form(host: Host, **changes) -> dict:
    form = {
        "name": host.name,
        "group": host.group_id,
        "address": host.address,
        "transport": host.transport,
        "port": host.port or "",
        "ssh_user": host.ssh_user,
        "shared_storage_paths": "[]",
    }
    return {**form, **changes}


def test_a_host_changed_in_the_admin_is_audited_as_the_api_does(browser, admin_user):
    host = Host.objects.create(name="h1", address="127.0.0.251")  # nothing listens there
    response = browser.post(
        f"/admin/hosts/host/{host.pk}/change/",
        host_form(host, name="h1-renamed", ssh_host_key="ssh-rsa AAAA\nssh-rsa BBBB"),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    host.refresh_from_db()
    assert host.name == "h1-renamed"
    assert host.ssh_host_key == ""  # not a field of the form: set through the API only
    [updated] = events("host.updated")
    assert updated.before == {"name": "h1"} and updated.after == {"name": "h1-renamed"}
    assert updated.actor == admin_user and updated.auth_method == "admin"

    browser.post(f"/admin/hosts/host/{host.pk}/delete/", {"post": "yes"})
    assert not Host.objects.filter(pk=host.pk).exists()
    assert [e.before["name"] for e in events("host.deleted")] == ["h1-renamed"]


def test_roles_given_and_taken_in_the_admin_are_audited(browser, admin_user):
    user = get_user_model().objects.create_user(username="carol", password="x-pass-123")
    operator = Group.objects.get(name="operator")
    form = {
        "username": "carol",
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "groups": [operator.pk],
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": "2026-12-07",
        "date_joined_1": "10:00:00",
    }
    response = browser.post(f"/admin/auth/user/{user.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    assert list(user.groups.values_list("name", flat=True)) == ["operator"]
    [granted] = events("user.roles_changed")
    assert granted.before["groups"] == [] and granted.after["groups"] == ["operator"]
    assert granted.actor == admin_user

    form.pop("groups")
    form["is_staff"] = "on"
    browser.post(f"/admin/auth/user/{user.pk}/change/", form)
    taken = events("user.roles_changed")[-1]
    assert taken.before["groups"] == ["operator"] and taken.after["groups"] == []
    [updated] = events("user.updated")
    assert updated.before == {"is_staff": False} and updated.after == {"is_staff": True}


def test_a_role_groups_permissions_changed_in_the_admin_are_audited(browser):
    auditor = Group.objects.get(name="auditor")
    kept = list(auditor.permissions.values_list("pk", flat=True))
    extra = Group.objects.get(name="operator").permissions.get(codename="migrate_vm")
    response = browser.post(
        f"/admin/auth/group/{auditor.pk}/change/",
        {"name": "auditor", "permissions": [*kept, extra.pk]},
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    [changed] = events("group.updated")
    assert "migrations_app.migrate_vm" not in changed.before["permissions"]
    assert "migrations_app.migrate_vm" in changed.after["permissions"]


def test_tokens_made_and_revoked_in_the_admin_are_audited_without_the_key(browser, admin_user):
    user = get_user_model().objects.create_user(username="bot", password="x-pass-123")
    response = browser.post("/admin/authtoken/tokenproxy/add/", {"user": user.pk})
    assert response.status_code == 302, response.content.decode()[-2000:]
    token = Token.objects.get(user=user)
    [created] = events("token.created")
    assert created.after == {"token_of": "bot"}
    assert token.key not in str(created.after) + str(created.detail)

    browser.post(f"/admin/authtoken/tokenproxy/{user.pk}/delete/", {"post": "yes"})
    assert not Token.objects.filter(user=user).exists()
    assert len(events("token.deleted")) == 1


def test_a_webhook_switched_off_in_the_admin_is_audited(browser):
    endpoint = WebhookEndpoint.objects.create(
        url="https://hooks.example.test/x", events=["migration.failed"], active=True
    )
    response = browser.post(f"/admin/migrations_app/webhookendpoint/{endpoint.pk}/change/", {})
    assert response.status_code == 302, response.content.decode()[-2000:]
    endpoint.refresh_from_db()
    assert endpoint.active is False
    [updated] = events("webhook.updated")
    assert updated.before == {"active": True} and updated.after == {"active": False}


@pytest.mark.parametrize(
    "key, code",
    [
        (GOOD_KEY, None),
        ("", None),
        (GOOD_KEY + "\n" + GOOD_KEY, "multiline"),
        (GOOD_KEY + "\r", "multiline"),
        (GOOD_KEY + " root@host", "format"),
        ("ssh-foo AAAA", "key_type"),
        ("ssh-ed25519 not*base64", "base64"),
        ("ssh-ed25519 AAAAB", "base64"),
    ],
)
def test_a_pinned_host_key_is_one_known_key_on_one_line(key, code):
    if code is None:
        validate_ssh_host_key(key)
        return
    with pytest.raises(ValidationError) as raised:
        validate_ssh_host_key(key)
    assert raised.value.code == code
