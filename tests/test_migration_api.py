"""The migrate request and control API, without hypervisors: validation, conflicts,
queue-side cancel. (Real migrations: test_migrations_lab.py.)"""

import threading
import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.domain.options import RULES, limits
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db


def _migrate(client, vm, **payload):
    return client.post(f"/api/vms/{vm.uuid}/migrate/", payload, format="json")


@pytest.mark.parametrize("payload", [{}, {"remote_host": ""}, {"remote_host": "   "}])
def test_blank_remote_host(api, vm, payload):
    response = _migrate(api, vm, **payload)
    assert response.status_code == 400
    assert response.json() == {"remote_host": ["Remote host field cannot be blank"]}
    assert not Migration.objects.exists()


@pytest.mark.parametrize(
    "payload,field", [({"user": "root"}, "password"), ({"password": "secret"}, "user")]
)
def test_user_and_password_go_together(api, vm, payload, field):
    response = _migrate(api, vm, remote_host="dst", **payload)
    assert response.status_code == 400
    assert response.json() == {field: ["Both user and password fields must be filled"]}


@pytest.mark.parametrize(
    "payload,field,fragment",
    [
        ({"max_downtime_ms": 50}, "max_downtime_ms", "at least 100 ms"),
        ({"storage": "nfs"}, "storage", '"nfs" is not a valid choice'),
        ({"transport": "carrier-pigeon"}, "transport", "not a valid choice"),
        ({"bandwidth_mib_s": -1}, "bandwidth_mib_s", "greater than or equal to 0"),
        ({"timeout_s": 0}, "timeout_s", "greater than or equal to 1"),
        ({"new_name": "a/b"}, "new_name", "libvirt connection URI"),
        ({"live": False, "storage": "copy"}, "storage", "live migration"),
        ({"parallel_connections": 4, "transport": "tunnelled"}, "parallel_connections", ""),
        ({"compressed": True, "parallel_connections": 2}, "compressed", "exclude each other"),
        ({"live": False, "allow_postcopy": True}, "live", "live migrations only"),
        ({"live": False, "transport": "tunnelled"}, "transport", "cannot be tunnelled"),
        ({"allow_postcopy": True, "transport": "tunnelled"}, "allow_postcopy", "tunnelled"),
        ({"storage": "copy", "transport": "tunnelled"}, "storage", "tunnelled"),
        ({"parallel_connections": 65}, "parallel_connections", "less than or equal to 64"),
        ({"timeout_s": 10**6}, "timeout_s", "less than or equal to"),
        ({"timeout_s": "soon"}, "timeout_s", "valid integer"),
        ({"remote_host": "bad_host!"}, "remote_host", "not a valid hostname or IP"),
        ({"remote_host": "bad host"}, "remote_host", "Must not contain space"),
        (
            {"convergence_policy": "postcopy_when_stalled"},
            "convergence_policy",
            "needs allow_postcopy: true",
        ),
        (
            {"live": False, "convergence_policy": "pause_when_stalled"},
            "convergence_policy",
            "offline migration",
        ),
        ({"convergence_policy": "hope"}, "convergence_policy", "not a valid choice"),
    ],
)
def test_bad_fields_are_named(api, vm, payload, field, fragment):
    response = _migrate(api, vm, **{"remote_host": "dst", **payload})
    assert response.status_code == 400, response.json()
    errors = response.json()
    assert field in errors
    assert fragment in " ".join(errors[field])
    assert not Migration.objects.exists()


def test_bad_options_register_no_host(api, vm):
    """The options are judged before the destination is resolved: a new address with a
    refused combination leaves no host behind (and sets up no ssh access)."""
    response = _migrate(api, vm, remote_host="192.0.2.99", live=False, transport="tunnelled")
    assert response.status_code == 400
    assert response.json() == {
        "transport": ["An offline migration cannot be tunnelled: only the VM's definition moves."]
    }
    assert not Host.objects.filter(address="192.0.2.99").exists()


def test_the_schema_shows_the_options_limits_and_rules(api):
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    request = schemas["MigrateRequest"]
    for name, (low, high) in limits().items():
        assert (request["properties"][name]["minimum"], request["properties"][name]["maximum"]) == (
            low,
            high,
        )
    assert schemas["Tune"]["properties"]["max_downtime_ms"]["minimum"] == 100
    for rule in RULES:
        assert f"- {rule.field}: {rule.message}" in request["description"]


def test_convergence_policy_default_comes_from_the_setting_and_shows(api, vm, settings):
    settings.MIGRATION_CONVERGENCE_POLICY = "abort_when_stalled"
    response = _migrate(api, vm, remote_host="dst")
    assert response.status_code == 202, response.json()
    assert response.json()["convergence_policy"] == "abort_when_stalled"
    record = api.get(f"/api/migrations/{response.json()['id']}/").json()
    assert record["convergence_policy"] == "abort_when_stalled"
    assert record["convergence_note"] == "" and record["remaining_trend_bytes"] == []


def test_the_schema_lists_the_convergence_policies(api):
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    prop = schemas["MigrateRequest"]["properties"]["convergence_policy"]
    assert "recommended: postcopy_when_stalled" in prop["description"]
    enum = schemas["ConvergencePolicyEnum"]["enum"]
    assert enum == [
        "none",
        "minimal_downtime",
        "postcopy_when_stalled",
        "pause_when_stalled",
        "abort_when_stalled",
    ]
    assert "not_converging" in schemas["FailureReasonEnum"]["enum"]


def test_unknown_vm_is_404(api, vm):
    response = api.post(f"/api/vms/{uuid.uuid4()}/migrate/", {"remote_host": "dst"}, format="json")
    assert response.status_code == 404


def test_viewer_cannot_migrate(viewer_api, vm):
    assert _migrate(viewer_api, vm, remote_host="dst").status_code == 403


def test_accepted_request_is_queued_with_location_and_audit(
    api, vm, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = _migrate(api, vm, remote_host="192.0.2.11", bandwidth_mib_s=30)
    assert response.status_code == 202
    body = response.json()
    assert response["Location"] == f"/api/migrations/{body['id']}/"
    assert body["status"] == "queued"
    assert body["destination"] == "dst"  # found by address
    assert body["max_downtime_ms"] == 500
    assert body["timeout_s"] == 21600
    assert len(callbacks) == 2  # publish to the browser, enqueue for the worker
    event = AuditEvent.objects.get(event_type="migration.requested")
    assert event.detail["options"]["bandwidth_mib_s"] == 30
    assert event.detail["source"] == "src"
    assert event.auth_method == "token"


def test_second_request_while_one_is_queued_is_409(api, vm):
    assert _migrate(api, vm, remote_host="dst").status_code == 202
    second = _migrate(api, vm, remote_host="dst")
    assert second.status_code == 409
    assert "already being migrated" in second.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_requests_give_one_202_and_one_409(admin_user, vm):
    barrier = threading.Barrier(2)
    statuses = []

    def request():
        client = APIClient()
        client.force_authenticate(admin_user)
        barrier.wait()
        statuses.append(_migrate(client, vm, remote_host="dst").status_code)
        connection.close()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202, 409]
    assert Migration.objects.filter(vm_uuid=vm.uuid).count() == 1


def test_cancel_a_queued_migration(api, vm):
    migration_id = _migrate(api, vm, remote_host="dst").json()["id"]
    response = api.post(f"/api/migrations/{migration_id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert "before it started" in response.json()["error"]
    again = api.post(f"/api/migrations/{migration_id}/cancel/")
    assert again.status_code == 409
    assert AuditEvent.objects.filter(event_type="migration.cancelled").count() == 1
    # The VM can be migrated again once nothing is active.
    assert _migrate(api, vm, remote_host="dst").status_code == 202


def test_tune_and_postcopy_need_a_running_migration(api, vm):
    migration_id = _migrate(api, vm, remote_host="dst").json()["id"]
    tune = api.post(f"/api/migrations/{migration_id}/tune/", {"max_downtime_ms": 300})
    assert tune.status_code == 409
    assert "needs a running migration" in tune.json()["detail"]
    low = api.post(f"/api/migrations/{migration_id}/tune/", {"max_downtime_ms": 10})
    assert low.status_code == 400
    assert low.json() == {
        "max_downtime_ms": [
            "Max downtime must be at least 100 ms: below that the VM may never converge."
        ]
    }
    negative = api.post(f"/api/migrations/{migration_id}/tune/", {"bandwidth_mib_s": -1})
    assert negative.json() == {
        "bandwidth_mib_s": ["Ensure this value is greater than or equal to 0."]
    }
    assert api.post(f"/api/migrations/{migration_id}/tune/", {}).status_code == 400
    postcopy = api.post(f"/api/migrations/{migration_id}/postcopy/")
    assert postcopy.status_code == 409
    assert "allow_postcopy" in postcopy.json()["detail"]


def test_migration_list_filters(api, vm):
    _migrate(api, vm, remote_host="dst")

    def listed(**params) -> int:
        return len(api.get("/api/migrations/", params).json()["results"])

    assert listed(vm="web-1") == 1
    assert listed(vm=str(vm.uuid)) == 1
    assert listed(host="dst") == 1
    assert listed(status="succeeded") == 0
    assert listed(user="admin") == 1
    assert listed(created_after="2999-01-01T00:00:00Z") == 0
    assert api.get("/api/migrations/", {"status": "flying"}).status_code == 400


def test_migrating_to_the_host_it_is_on_is_a_400_on_remote_host(api, vm):
    response = _migrate(api, vm, remote_host=vm.host.name)
    assert response.status_code == 400
    assert response.json() == {
        "remote_host": [f"{vm.name} is already on {vm.host.name}: choose another host."]
    }
    assert not Migration.objects.exists()
