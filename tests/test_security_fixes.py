"""Issue #10's security fixes, without hypervisors: ssh is the default transport, the
migrate request's user cannot reach into the libvirt URI, accept-host-key takes the
fingerprint that was checked, and migrate/check changes nothing."""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.test import Client

from audit.models import AuditEvent
from audit.services import Actor
from hosts import gateway, services
from hosts.access import ssh, ssh_services
from hosts.models import Host, Transport
from migrations_app.models import Migration
from migrations_app.prechecks import CheckName
from migrations_app.prechecks import facts as precheck_facts
from tests.grants import grant
from vms import services as vm_services
from vms.models import VM

pytestmark = pytest.mark.django_db

TCP_LABEL = "TCP — unauthenticated, for lab use"
URI_BREAKING_USER = "r@127.0.0.3/system?no_verify=1#"
PASSWORD = "never-used-Pw-4471"


def _row_counts() -> dict[str, int]:
    """Rows of every model of the project's apps (audit events included)."""
    return {
        model._meta.label: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in {"audit", "hosts", "vms", "migrations_app"}
    }


@pytest.fixture
def no_remote_contact(monkeypatch):
    """Any ssh login, host key scan or libvirt connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a host was contacted")

    monkeypatch.setattr(ssh, "session_open", refuse)
    monkeypatch.setattr(ssh, "host_key_scan", refuse)
    monkeypatch.setattr(gateway, "connect", refuse)


# --- 1. ssh is the default transport ---------------------------------------------------


def test_a_host_registered_without_transport_uses_ssh(api):
    response = api.post("/api/hosts/", {"name": "hv", "address": "127.0.0.253"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["transport"] == "ssh"
    assert body["libvirt_uri"] == "qemu+ssh://root@127.0.0.253/system"
    assert Host.objects.get(pk=body["id"]).transport == Transport.SSH
    assert Host._meta.get_field("transport").default == Transport.SSH


def test_tcp_is_still_registered_when_asked_for(api):
    body = api.post(
        "/api/hosts/", {"name": "lab", "address": "127.0.0.2", "transport": "tcp"}, format="json"
    ).json()
    assert (body["transport"], body["libvirt_uri"]) == ("tcp", "qemu+tcp://127.0.0.2/system")


def test_a_remote_host_typed_into_a_migrate_request_is_registered_over_ssh(monkeypatch, db):
    refreshed = []
    monkeypatch.setattr(
        vm_services, "host_refresh", lambda *, host, actor: refreshed.append(host) or host
    )
    host = vm_services.host_resolve_or_register(
        remote_host="127.0.0.252", actor=Actor.system("test")
    )
    assert (host.transport, host.address, host.name) == ("ssh", "127.0.0.252", "127.0.0.252")
    assert refreshed == [host]
    assert AuditEvent.objects.get(event_type="host.created").after["transport"] == "ssh"


def test_tcp_is_labelled_unauthenticated_in_the_model_the_schema_and_the_pages(api, admin_user, vm):
    assert Transport.TCP.label == TCP_LABEL
    schema = api.get("/api/schema/", {"format": "json"}).json()
    transport = schema["components"]["schemas"]["Host"]["properties"]["transport"]
    assert transport["default"] == "ssh"
    assert f"`tcp` - {TCP_LABEL}" in transport["description"]

    Host.objects.filter(name="dst").update(transport=Transport.TCP)
    browser = Client()
    browser.force_login(admin_user)
    dashboard = browser.get("/").content.decode()
    dst_row = re.search(r'<tr data-host="dst">.*?</tr>', dashboard, re.S)[0]
    src_row = re.search(r'<tr data-host="src">.*?</tr>', dashboard, re.S)[0]
    assert TCP_LABEL in dst_row and TCP_LABEL not in src_row
    dialog = browser.get(f"/vms/{vm.uuid}/").content.decode()
    option = re.search(r'<option value="dst">(.*?)</option>', dialog)[1]
    assert option.endswith(TCP_LABEL)
    assert "registered when the migration starts, reached over ssh" in dialog


# --- 2. the migrate request's user; full_clean on every save path -----------------------


@pytest.mark.parametrize("user", [URI_BREAKING_USER, "ops user", "x" * 33])
@pytest.mark.parametrize("endpoint", ["migrate/", "migrate/check/"])
def test_the_migrate_requests_user_is_validated_as_the_ssh_access_user(
    api, vm, no_remote_contact, user, endpoint
):
    before = _row_counts()
    response = api.post(
        f"/api/vms/{vm.uuid}/{endpoint}",
        {"remote_host": "127.0.0.253", "user": user, "password": PASSWORD},
        format="json",
    )
    assert response.status_code == 400
    assert list(response.json()) == ["user"]
    # The very answer the ssh-access request gives for the same user.
    ssh_access = api.post(
        f"/api/hosts/{vm.host.pk}/ssh-access/", {"user": user, "password": PASSWORD}, format="json"
    )
    assert ssh_access.status_code == 400
    assert response.json()["user"] == ssh_access.json()["user"]
    assert _row_counts() == before
    assert not Host.objects.filter(address="127.0.0.253").exists()


def test_a_uri_breaking_user_names_the_characters(api, vm):
    response = api.post(
        f"/api/vms/{vm.uuid}/migrate/",
        {"remote_host": "dst", "user": URI_BREAKING_USER, "password": PASSWORD},
        format="json",
    )
    assert response.json() == {
        "user": ["Must not contain '#', '/', '?', '@': it would break the libvirt connection URI."]
    }


def test_ssh_access_set_up_refuses_a_bad_user_before_any_login(vm, no_remote_contact):
    host = Host.objects.get(name="dst")
    with pytest.raises(ValidationError) as caught:
        ssh_services.host_ssh_access_set_up(
            host=host, user=URI_BREAKING_USER, password=PASSWORD, actor=Actor.system("test")
        )
    assert list(caught.value.message_dict) == ["user"]
    host.refresh_from_db()
    assert (host.ssh_user, host.ssh_access_user) == ("root", "")


class _FakeSession:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, command, timeout=30.0):
        return 0, "", ""


def test_ssh_access_set_up_full_cleans_the_host_before_saving(vm, monkeypatch):
    monkeypatch.setattr(ssh_services, "session_for_host", lambda host, **kwargs: _FakeSession())
    host = Host.objects.get(name="dst")
    Host.objects.filter(pk=host.pk).update(transport=Transport.TCP, address="not a host")
    ssh_services.portal_public_key()  # made (and audited) on first use, before this
    events = AuditEvent.objects.count()
    with pytest.raises(ValidationError) as caught:
        ssh_services.host_ssh_access_set_up(
            host=host, user="ops", password=PASSWORD, actor=Actor.system("test")
        )
    assert "address" in caught.value.message_dict
    host.refresh_from_db()
    assert (host.transport, host.ssh_access_user) == ("tcp", "")
    assert AuditEvent.objects.count() == events

    # With a valid host the same set-up is saved and audited.
    Host.objects.filter(pk=host.pk).update(address="127.0.0.211")
    host = ssh_services.host_ssh_access_set_up(
        host=host, user="ops", password=PASSWORD, actor=Actor.system("test")
    )
    assert (host.transport, host.ssh_user, host.ssh_access_user) == ("ssh", "ops", "ops")
    assert AuditEvent.objects.filter(event_type="host.ssh_key_installed").count() == 1


def test_host_create_and_update_full_clean_and_answer_400_with_field_names(api):
    with pytest.raises(ValidationError) as caught:
        services.host_create(actor=Actor.system("test"), name="h", address="bad host")
    assert list(caught.value.message_dict) == ["address"]
    host_id = api.post(
        "/api/hosts/", {"name": "hv", "address": "127.0.0.253"}, format="json"
    ).json()["id"]
    response = api.patch(f"/api/hosts/{host_id}/", {"ssh_user": "a@b"}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["ssh_user"]
    assert Host.objects.get(pk=host_id).ssh_user == "root"


# --- 3. accept-host-key takes the fingerprint --------------------------------------------

OLD = "SHA256:" + "o" * 43
NEW = "SHA256:" + "n" * 43


@pytest.fixture
def changed_key_host(db) -> Host:
    return Host.objects.create(
        name="kv",
        address="127.0.0.250",
        transport=Transport.SSH,
        ssh_host_key="ssh-ed25519 AAAAoldA",
        ssh_host_key_fingerprint=OLD,
        ssh_host_key_pending="ssh-ed25519 AAAAnewA",
        ssh_host_key_pending_fingerprint=NEW,
    )


def _accept(client, host: Host, body: dict):
    return client.post(f"/api/hosts/{host.pk}/accept-host-key/", body, format="json")


def test_accept_host_key_requires_the_fingerprint(api, changed_key_host):
    response = _accept(api, changed_key_host, {})
    assert response.status_code == 400
    assert response.json() == {"fingerprint": ["This field is required."]}
    changed_key_host.refresh_from_db()
    assert changed_key_host.ssh_host_key_fingerprint == OLD


def test_accept_host_key_refuses_another_fingerprint_naming_the_pending_one(api, changed_key_host):
    response = _accept(api, changed_key_host, {"fingerprint": OLD})
    assert response.status_code == 400
    (message,) = response.json()["fingerprint"]
    assert NEW in message and OLD in message
    changed_key_host.refresh_from_db()
    assert (changed_key_host.ssh_host_key_fingerprint, changed_key_host.ssh_host_key) == (
        OLD,
        "ssh-ed25519 AAAAoldA",
    )
    assert changed_key_host.ssh_host_key_pending_fingerprint == NEW
    assert not AuditEvent.objects.filter(event_type="host.host_key_accepted").exists()


def test_accept_host_key_with_the_pending_fingerprint_accepts_and_audits(api, changed_key_host):
    response = _accept(api, changed_key_host, {"fingerprint": NEW})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["ssh_host_key_fingerprint"], body["ssh_host_key_pending_fingerprint"]) == (NEW, "")
    changed_key_host.refresh_from_db()
    assert changed_key_host.ssh_host_key == "ssh-ed25519 AAAAnewA"
    event = AuditEvent.objects.get(event_type="host.host_key_accepted")
    assert (event.before, event.after) == (
        {"ssh_host_key_fingerprint": OLD},
        {"ssh_host_key_fingerprint": NEW},
    )
    # Nothing is pending any more: a second accept is refused on the fingerprint.
    again = _accept(api, changed_key_host, {"fingerprint": NEW})
    assert again.status_code == 400
    assert "no changed host key waiting" in again.json()["fingerprint"][0]
    assert AuditEvent.objects.filter(event_type="host.host_key_accepted").count() == 1


def test_accept_host_key_needs_staff(viewer_api, changed_key_host):
    assert _accept(viewer_api, changed_key_host, {"fingerprint": NEW}).status_code == 403
    changed_key_host.refresh_from_db()
    assert changed_key_host.ssh_host_key_fingerprint == OLD


def test_the_dashboard_offers_to_accept_the_shown_fingerprint_to_staff_only(
    admin_user, viewer_user, changed_key_host
):
    grant(viewer_user, "viewer")  # a role that sees the host, not one that changes it
    staff = Client()
    staff.force_login(admin_user)
    row = re.search(r'<tr data-host="kv">.*?</tr>', staff.get("/").content.decode(), re.S)[0]
    button = re.search(r'<button [^>]*data-action="accept-host-key"[^>]*>', row)[0]
    assert f'data-fingerprint="{NEW}"' in button
    assert f'data-host-id="{changed_key_host.pk}"' in button
    assert OLD in row
    viewer = Client()
    viewer.force_login(viewer_user)
    row = re.search(r'<tr data-host="kv">.*?</tr>', viewer.get("/").content.decode(), re.S)[0]
    assert NEW in row and 'data-action="accept-host-key"' not in row


# --- 4. migrate/check changes nothing ----------------------------------------------------


def _check(client, vm: VM, **body):
    return client.post(f"/api/vms/{vm.uuid}/migrate/check/", body, format="json")


def test_check_of_an_unregistered_host_registers_nothing_and_uses_no_password(
    api, vm, no_remote_contact
):
    before = _row_counts()
    events = AuditEvent.objects.count()
    response = _check(api, vm, remote_host="127.0.0.251", user="ops", password=PASSWORD)
    assert response.status_code == 200, response.json()
    assert _row_counts() == before
    assert AuditEvent.objects.count() == events
    assert not Host.objects.filter(address="127.0.0.251").exists()
    assert PASSWORD not in response.content.decode()

    body = response.json()
    first = body["checks"][0]
    assert (first["name"], first["status"]) == ("destination_registered", "skipped")
    assert "127.0.0.251 is not a registered host" in first["message"]
    assert "transport ssh" in first["message"]
    assert [c["name"] for c in body["checks"][1:]] == list(CheckName)
    assert {c["status"] for c in body["checks"]} == {"skipped"}
    assert body["ok"] is True  # nothing failed: the migration checks it once registered
    assert len(body["notes"]) == 1 and "user and password were ignored" in body["notes"][0]


def test_check_of_an_invalid_remote_host_is_400_and_writes_nothing(api, vm, no_remote_contact):
    before = _row_counts()
    response = _check(api, vm, remote_host="bad_host!")
    assert response.status_code == 400
    assert list(response.json()) == ["remote_host"]
    assert "not a valid hostname or IP" in response.json()["remote_host"][0]
    assert _row_counts() == before


@pytest.mark.parametrize("credentials", [{}, {"user": "ops", "password": PASSWORD}])
def test_check_of_a_registered_host_runs_the_prechecks_and_changes_nothing(
    api, vm, monkeypatch, no_remote_contact, credentials
):
    opened = []

    def unreachable(host, *, timeout=None, reuse=False):
        # The pre-checks take each host's opener first and open in threads of their own.
        def open_connection():
            opened.append(host.name)
            raise gateway.HostUnreachable(f"{host.name} did not answer")

        return open_connection

    monkeypatch.setattr(precheck_facts, "host_connector", unreachable)
    destination = Host.objects.get(name="dst")
    before = _row_counts()
    response = _check(api, vm, remote_host="dst", **credentials)
    assert response.status_code == 200, response.json()
    body = response.json()
    by_name = {c["name"]: c for c in body["checks"]}
    assert list(by_name) == list(CheckName)
    if credentials:
        # Access for "ops" is set up with the password by the migration, not the check:
        # nothing is contacted, every check waits for the worker.
        assert opened == []
        assert {c["status"] for c in body["checks"]} == {"skipped"}
        assert "as ops is set up with the password" in by_name["destination_reachable"]["message"]
        assert body["ok"] is True
    else:
        # Checked over the connections the hosts have now; the source once more for the
        # convergence forecast (the guest's dirty rate), with the same opener.
        assert sorted(opened) == ["dst", "src", "src"]
        assert body["convergence"]["outlook"] == "unknown"
        assert by_name["destination_reachable"]["status"] == "fail"
        assert "dst did not answer" in by_name["destination_reachable"]["message"]
        assert body["ok"] is False
    assert bool(body["notes"]) == bool(credentials)
    assert _row_counts() == before
    destination.refresh_from_db()
    assert (destination.ssh_user, destination.ssh_access_user) == ("root", "")
    assert PASSWORD not in response.content.decode()


def test_migrate_still_registers_and_records(api, vm, monkeypatch):
    """The other side of the check: the migrate request itself registers the new host
    (over ssh) and records the migration with its audit event."""
    monkeypatch.setattr(
        "migrations_app.api.views.host_resolve_or_register",
        lambda *, remote_host, actor, group_id: services.host_create(
            actor=actor, name=remote_host, address=remote_host, group_id=group_id
        ),
    )
    monkeypatch.setattr("migrations_app.requests.migration_enqueue", lambda **kwargs: True)
    response = api.post(
        f"/api/vms/{vm.uuid}/migrate/", {"remote_host": "127.0.0.248"}, format="json"
    )
    assert response.status_code == 202, response.json()
    assert Host.objects.get(address="127.0.0.248").transport == "ssh"
    assert Migration.objects.filter(destination__address="127.0.0.248").count() == 1
    assert AuditEvent.objects.filter(event_type="migration.requested").count() == 1


# --- 5. the OpenAPI schema ---------------------------------------------------------------


def test_the_schema_describes_the_fixes(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    accept = schema["paths"]["/api/hosts/{id}/accept-host-key/"]["post"]["requestBody"]
    assert accept["required"] is True
    ref = accept["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert components[ref]["required"] == ["fingerprint"]
    assert "fingerprint" in components[ref]["properties"]

    transport = components["Host"]["properties"]["transport"]
    assert transport["default"] == "ssh"
    assert "transport" not in components["Host"].get("required", [])
    enum = transport["allOf"][0]["$ref"].rsplit("/", 1)[1]
    assert components[enum]["enum"] == ["tcp", "ssh", "tls"]
    assert TCP_LABEL in components[enum]["description"]

    checks_schema = components["MigrationChecks"]
    assert "notes" in checks_schema["required"]
    user = components["MigrateRequest"]["properties"]["user"]
    assert user["maxLength"] == 32
    assert "ignores" in user["description"]
