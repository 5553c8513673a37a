import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from hosts.models import Host
from tests.grants import grant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _example_names_allowed(settings):
    """These tests register hosts by name (RFC 2606 names) and never contact them."""
    settings.HOST_NETWORKS = "127.0.0.0/8,::1/128,.example.net,.example"


def _create(api, **overrides):
    payload = {"name": "hv-1", "address": "hv1.example.net", "transport": "tcp"}
    payload.update(overrides)
    return api.post("/api/hosts/", payload, format="json")


@pytest.mark.parametrize("url", ["/api/hosts/", "/api/vms/", "/api/schema/", "/api/docs/"])
def test_nothing_is_readable_without_login(url):
    response = APIClient().get(url)
    assert response.status_code in (401, 403), response.status_code


def test_bad_token_is_refused(admin_user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/hosts/").status_code == 401


def test_create_host_derives_uri_and_records_audit(api, admin_user):
    response = _create(api, port=16600)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["libvirt_uri"] == "qemu+tcp://hv1.example.net:16600/system"
    assert body["status"] == "unknown"
    event = AuditEvent.objects.get(event_type="host.created")
    assert event.actor_name == "admin"
    assert event.auth_method == "token"
    assert event.after["address"] == "hv1.example.net"


def test_ssh_and_tls_uris(api):
    ssh = _create(api, name="s", address="127.0.0.203", transport="ssh", ssh_user="ops").json()
    assert ssh["libvirt_uri"] == "qemu+ssh://ops@127.0.0.203/system"
    tls = _create(api, name="t", address="::1", transport="tls").json()
    assert tls["libvirt_uri"] == "qemu+tls://[::1]/system"


@pytest.mark.parametrize(
    "address", ["not a host", "host_name.example", "-bad.example", "10.0.0.300", "a..b", ""]
)
def test_address_must_be_hostname_or_ip(api, address):
    response = _create(api, address=address)
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == ["address"]
    assert errors["address"][0]


@pytest.mark.parametrize("char", ["/", "?", "#", "@", ";", " "])
@pytest.mark.parametrize("field", ["name", "address", "ssh_user"])
def test_uri_breaking_characters_are_refused_in_every_field(api, field, char):
    value = {"name": "hv", "address": "hv.example.net", "ssh_user": "root"}[field]
    response = _create(api, **{field: f"{value}{char}x"})
    assert response.status_code == 400
    message = " ".join(response.json()[field])
    assert "libvirt connection URI" in message
    assert ("space" if char == " " else f"'{char}'") in message
    assert not Host.objects.exists()


def test_duplicate_name_and_address_are_refused(api):
    assert _create(api).status_code == 201
    dup_name = _create(api, address="other.example.net")
    assert dup_name.status_code == 400
    assert dup_name.json() == {"name": ["A host with this name already exists."]}
    dup_address = _create(api, name="hv-2")
    assert dup_address.status_code == 400
    assert dup_address.json() == {"address": ["A host with this address already exists."]}


def test_bad_transport_port_and_paths_name_the_field(api):
    response = _create(api, transport="telnet", port=70000, shared_storage_paths=["rel/path"])
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {"transport", "port", "shared_storage_paths"}
    assert "telnet" in errors["transport"][0]
    assert "65535" in errors["port"][0]


def test_update_records_before_and_after(api):
    host_id = _create(api).json()["id"]
    response = api.patch(f"/api/hosts/{host_id}/", {"address": "127.0.0.209"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["libvirt_uri"] == "qemu+tcp://127.0.0.209/system"
    event = AuditEvent.objects.get(event_type="host.updated")
    assert event.before == {"address": "hv1.example.net"}
    assert event.after == {"address": "127.0.0.209"}


def test_delete_records_audit(api):
    host_id = _create(api).json()["id"]
    assert api.delete(f"/api/hosts/{host_id}/").status_code == 204
    assert not Host.objects.filter(pk=host_id).exists()
    assert AuditEvent.objects.filter(event_type="host.deleted", target_id=str(host_id)).exists()


def test_non_staff_users_read_but_do_not_change(api, viewer_api, viewer_user):
    host_id = _create(api).json()["id"]
    assert viewer_api.get("/api/hosts/").json()["count"] == 0  # no role: no host
    grant(viewer_user, "viewer")
    assert viewer_api.get("/api/hosts/").json()["count"] == 1
    response = viewer_api.post("/api/hosts/", {"name": "x", "address": "x.example"}, format="json")
    assert response.status_code == 403
    assert viewer_api.post(f"/api/hosts/{host_id}/refresh/").status_code == 403


def test_audit_events_cannot_be_changed_or_deleted(api):
    _create(api)
    event = AuditEvent.objects.get()
    event.event_type = "forged"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    assert AuditEvent.objects.get().event_type == "host.created"


def test_openapi_schema_and_docs(api):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/hosts/{id}/refresh/" in paths
    assert "/api/vms/{uuid}/" in paths
    accept = paths["/api/hosts/{id}/accept-host-key/"]["post"]["requestBody"]
    assert accept["required"] is True
    components = schema.json()["components"]["schemas"]
    assert components["AcceptHostKey"]["required"] == ["fingerprint"]
    assert components["Host"]["properties"]["transport"]["default"] == "ssh"
    assert api.get("/api/docs/").status_code == 200
