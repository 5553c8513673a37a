"""Enterprise login against a real OpenLDAP slapd (tests/ldap_server.py, started here on
127.0.0.40): LDAP people log in on the login page, their LDAP groups give their portal
roles at each login (a change audited), wrong passwords fail, and local accounts keep
working beside it, also while the directory is down."""

from __future__ import annotations

import subprocess

import ldap
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_auth_ldap.config import GroupOfNamesType, LDAPSearch

from audit.models import AuditEvent
from migrations_app.permissions import can_migrate
from tests import ldap_server

pytestmark = [pytest.mark.ldap, pytest.mark.django_db]

GROUPS = f"ou=groups,{ldap_server.SUFFIX}"
ROLE_GROUPS = {
    f"cn=operators,{GROUPS}": "operator",
    f"cn=host-admins,{GROUPS}": "host admin",
    f"CN=Auditors,{GROUPS.upper()}": "auditor",  # DNs compare case-insensitively
}

HOST_GROUP_ROLES = {
    f"cn=team-a-operators,{GROUPS}": {"role": "operator", "host_group": "team-a"},
    f"CN=Team-A-Admins,{GROUPS}": [
        {"role": "host admin", "host_group": "team-a"},
        {"role": "viewer", "host_group": "no-such-group"},  # skipped, with a warning
    ],
}


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    server = ldap_server.start(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


@pytest.fixture
def ldap_settings(settings, directory):
    settings.AUTHENTICATION_BACKENDS = [
        "audit.ldap_login.PortalLDAPBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    settings.AUTH_LDAP_SERVER_URI = directory.uri
    settings.AUTH_LDAP_BIND_DN = ldap_server.ADMIN_DN
    settings.AUTH_LDAP_BIND_PASSWORD = ldap_server.ADMIN_PASSWORD
    settings.AUTH_LDAP_USER_SEARCH = LDAPSearch(
        f"ou=people,{ldap_server.SUFFIX}", ldap.SCOPE_SUBTREE, "(uid=%(user)s)"
    )
    settings.AUTH_LDAP_GROUP_SEARCH = LDAPSearch(
        GROUPS, ldap.SCOPE_SUBTREE, "(objectClass=groupOfNames)"
    )
    settings.AUTH_LDAP_GROUP_TYPE = GroupOfNamesType()
    settings.AUTH_LDAP_USER_ATTR_MAP = {"last_name": "sn", "email": "mail"}
    settings.AUTH_LDAP_ALWAYS_UPDATE_USER = True
    settings.AUTH_LDAP_CONNECTION_OPTIONS = {ldap.OPT_NETWORK_TIMEOUT: 3}
    settings.LDAP_ROLE_GROUPS = ROLE_GROUPS
    settings.LDAP_HOST_GROUP_ROLES = HOST_GROUP_ROLES
    return directory


def log_in(username: str, password: str) -> Client:
    client = Client()
    response = client.post("/login/", {"username": username, "password": password})
    client.logged_in = response.status_code == 302
    return client


def roles(username: str) -> list[str]:
    user = get_user_model().objects.get(username=username)
    return sorted(user.groups.values_list("name", flat=True))


def test_ldap_people_log_in_with_the_roles_of_their_groups(ldap_settings):
    olivia = log_in("olivia", "olivia-pass-1")
    assert olivia.logged_in
    assert olivia.get("/").status_code == 200
    assert roles("olivia") == ["operator"]
    assert can_migrate(get_user_model().objects.get(username="olivia"))
    assert get_user_model().objects.get(username="olivia").email == "olivia@portal.test"
    assert log_in("hank", "hank-pass-1").logged_in
    assert roles("hank") == ["host admin", "operator"]
    assert log_in("ana", "ana-pass-1").logged_in and roles("ana") == ["auditor"]
    assert log_in("nobody", "nobody-pass-1").logged_in and roles("nobody") == []

    granted = AuditEvent.objects.filter(event_type="user.roles_changed", actor_name="ldap")
    assert {e.target_repr: e.after["groups"] for e in granted} == {
        "olivia": ["operator"],
        "hank": ["host admin", "operator"],
        "ana": ["auditor"],
    }
    assert AuditEvent.objects.filter(event_type="auth.login").count() == 4


def test_a_wrong_password_fails_and_is_audited(ldap_settings):
    client = log_in("olivia", "not-her-password")
    assert not client.logged_in
    assert AuditEvent.objects.filter(event_type="auth.login_failed").count() == 1
    assert not get_user_model().objects.filter(username="olivia").exists()


def test_a_group_change_in_the_directory_changes_the_roles_at_the_next_login(ldap_settings):
    assert log_in("olivia", "olivia-pass-1").logged_in
    assert roles("olivia") == ["operator"]
    modify = (
        f"dn: cn=operators,{GROUPS}\nchangetype: modify\ndelete: member\n"
        f"member: uid=olivia,ou=people,{ldap_server.SUFFIX}\n"
    )
    subprocess.run(
        ["ldapmodify", "-x", "-H", ldap_settings.uri, "-D", ldap_server.ADMIN_DN,
         "-w", ldap_server.ADMIN_PASSWORD],
        input=modify, text=True, check=True, capture_output=True,
    )  # fmt: skip
    try:
        assert log_in("olivia", "olivia-pass-1").logged_in
        assert roles("olivia") == []
        taken = AuditEvent.objects.filter(event_type="user.roles_changed").latest("id")
        assert taken.before == {"groups": ["operator"]} and taken.after == {"groups": []}
    finally:
        subprocess.run(
            ["ldapmodify", "-x", "-H", ldap_settings.uri, "-D", ldap_server.ADMIN_DN,
             "-w", ldap_server.ADMIN_PASSWORD],
            input=modify.replace("delete: member", "add: member"), text=True, check=True,
            capture_output=True,
        )  # fmt: skip


def test_local_accounts_keep_working_also_when_the_directory_is_down(ldap_settings, settings):
    get_user_model().objects.create_user(username="local", password="local-pass-123")
    assert log_in("local", "local-pass-123").logged_in
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.40:1"  # nothing listens there
    assert log_in("local", "local-pass-123").logged_in
    down = log_in("olivia", "olivia-pass-1")
    assert not down.logged_in  # refused, not a 500


def test_roles_of_maps_only_known_roles():
    from audit.ldap_login import roles_of

    mapping = {"cn=a,dc=x": "operator", "cn=b,dc=x": "superuser", "CN=C,DC=X": "auditor"}
    assert roles_of({"CN=A,DC=X", "cn=b,dc=x", "cn=c,dc=x", "cn=z,dc=x"}, mapping) == [
        "auditor",
        "operator",
    ]


def test_ldap_groups_give_roles_on_one_host_group(ldap_settings):
    from hosts.models import Host, HostGroup, HostGroupGrant
    from migrations_app.permissions import can_migrate_in

    team_a = HostGroup.objects.create(name="team-a")
    team_b = HostGroup.objects.create(name="team-b")
    Host.objects.create(name="a1", address="192.0.2.31", group=team_a)
    Host.objects.create(name="b1", address="192.0.2.32", group=team_b)
    tara = log_in("tara", "tara-pass-1")
    assert tara.logged_in
    assert roles("tara") == []  # no global role
    user = get_user_model().objects.get(username="tara")
    grants = HostGroupGrant.objects.filter(user=user)
    assert sorted(grants.values_list("host_group__name", "role", "source")) == [
        ("team-a", "host admin", "ldap"),
        ("team-a", "operator", "ldap"),
    ]
    assert can_migrate_in(user, team_a.pk) and not can_migrate_in(user, team_b.pk)
    dashboard = tara.get("/").content.decode()
    assert 'data-host="a1"' in dashboard and 'data-host="b1"' not in dashboard
    added = AuditEvent.objects.filter(event_type="host_group.grant_added", actor_name="ldap")
    assert added.count() == 2

    # An administrator's own grant stays; the LDAP ones follow the directory.
    from audit.services import Actor
    from hosts.group_services import grant_create

    grant_create(actor=Actor.system("test"), host_group=team_b, role="viewer", user=user)
    modify = (
        f"dn: cn=team-a-operators,{GROUPS}\nchangetype: modify\ndelete: member\n"
        f"member: uid=tara,ou=people,{ldap_server.SUFFIX}\n"
    )
    command = ["ldapmodify", "-x", "-H", ldap_settings.uri, "-D", ldap_server.ADMIN_DN,
               "-w", ldap_server.ADMIN_PASSWORD]  # fmt: skip
    subprocess.run(command, input=modify, text=True, check=True, capture_output=True)
    try:
        assert log_in("tara", "tara-pass-1").logged_in
        assert sorted(grants.values_list("host_group__name", "role", "source")) == [
            ("team-a", "host admin", "ldap"),
            ("team-b", "viewer", ""),
        ]
        removed = AuditEvent.objects.get(event_type="host_group.grant_removed")
        assert removed.actor_name == "ldap" and removed.before["role"] == "operator"
    finally:
        subprocess.run(
            command,
            input=modify.replace("delete: member", "add: member"),
            text=True,
            check=True,
            capture_output=True,
        )


def test_host_group_roles_of_maps_known_roles_only():
    from hosts.ldap_grants import host_group_roles_of

    mapping = {
        "cn=a,dc=x": {"role": "operator", "host_group": "g1"},
        "CN=B,DC=X": [
            {"role": "viewer", "host_group": "g2"},
            {"role": "auditor", "host_group": "g2"},
        ],
        "cn=c,dc=x": {"role": "host admin"},  # no group: nothing
    }
    assert host_group_roles_of({"CN=A,DC=X", "cn=b,dc=x", "cn=c,dc=x", "cn=z,dc=x"}, mapping) == {
        ("g1", "operator"),
        ("g2", "viewer"),
    }
