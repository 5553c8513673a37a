"""Live or offline when the request does not say (issue #21, item 6): a shut-off VM moves
offline and the answer says why; `live: true` for a shut-off VM is a 400 on `live`.
Without hypervisors (the real offline migration: test_migrations_lab.py)."""

import pytest
from django.core.exceptions import ValidationError

from migrations_app.domain.convergence import ConvergencePolicy
from migrations_app.domain.options import (
    LIVE_FOR_SHUT_OFF,
    LiveFrom,
    MigrationOptions,
    live_mode_resolved,
)
from migrations_app.models import Migration


@pytest.mark.parametrize(
    "given,live,state,expected_live,expected_from",
    [
        ((), True, "running", True, LiveFrom.DEFAULT),
        ((), True, "paused", True, LiveFrom.DEFAULT),
        ((), True, "shut_off", False, LiveFrom.VM_SHUT_OFF),
        (("live",), True, "running", True, LiveFrom.REQUEST),
        (("live",), False, "running", False, LiveFrom.REQUEST),  # the precheck refuses it
        (("live",), False, "shut_off", False, LiveFrom.REQUEST),
        # Crashed is not shut off: live stays the default, its pre-check explains.
        ((), True, "crashed", True, LiveFrom.DEFAULT),
    ],
)
def test_live_follows_the_request_else_the_vm_state(
    settings, given, live, state, expected_live, expected_from
):
    settings.MIGRATION_CONVERGENCE_POLICY = "none"
    options, live_from = live_mode_resolved(
        options=MigrationOptions(live=live), given=frozenset(given), vm_state=state
    )
    assert (options.live, live_from) == (expected_live, expected_from)


def test_live_true_for_a_shut_off_vm_is_refused_on_live():
    with pytest.raises(ValidationError) as refused:
        live_mode_resolved(
            options=MigrationOptions(live=True), given=frozenset({"live"}), vm_state="shut_off"
        )
    assert refused.value.message_dict == {"live": [LIVE_FOR_SHUT_OFF]}


def test_offline_by_state_drops_the_default_policy_but_judges_a_given_one(settings):
    settings.MIGRATION_CONVERGENCE_POLICY = "abort_when_stalled"
    options, _ = live_mode_resolved(
        options=MigrationOptions(), given=frozenset(), vm_state="shut_off"
    )
    assert options.convergence_policy == ConvergencePolicy.NONE
    with pytest.raises(ValidationError) as refused:
        live_mode_resolved(
            options=MigrationOptions(convergence_policy="abort_when_stalled"),
            given=frozenset({"convergence_policy"}),
            vm_state="shut_off",
        )
    assert "convergence_policy" in refused.value.message_dict
    # Options that exist only live are named, not silently dropped.
    with pytest.raises(ValidationError) as refused:
        live_mode_resolved(
            options=MigrationOptions(storage="copy"),
            given=frozenset({"storage"}),
            vm_state="shut_off",
        )
    assert "storage" in refused.value.message_dict


def _migrate(client, vm, path="migrate/", **payload):
    return client.post(f"/api/vms/{vm.uuid}/{path}", payload, format="json")


def _shut_off(vm):
    vm.state = "shut_off"
    vm.save(update_fields=["state"])
    return vm


@pytest.mark.django_db
def test_a_shut_off_vm_without_live_is_queued_offline_and_the_answer_says_so(api, vm):
    response = _migrate(api, _shut_off(vm), remote_host="dst")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["live"], body["live_from"]) == (False, "vm_shut_off")
    assert Migration.objects.get(pk=body["id"]).live is False


@pytest.mark.django_db
def test_live_true_for_a_shut_off_vm_is_400_on_live(api, vm):
    response = _migrate(api, _shut_off(vm), remote_host="dst", live=True)
    assert response.status_code == 400
    assert response.json() == {"live": [LIVE_FOR_SHUT_OFF]}
    assert not Migration.objects.exists()
    # The check says the same, before anything is queued.
    check = _migrate(api, vm, path="migrate/check/", remote_host="dst", live=True)
    assert check.status_code == 400 and "live" in check.json()


@pytest.mark.django_db
def test_a_running_vm_is_live_by_default_and_by_request(api, vm):
    response = _migrate(api, vm, remote_host="dst")
    assert response.status_code == 202
    assert (response.json()["live"], response.json()["live_from"]) == (True, "default")
    Migration.objects.all().delete()
    response = _migrate(api, vm, remote_host="dst", live=True)
    assert (response.json()["live"], response.json()["live_from"]) == (True, "request")


@pytest.mark.django_db
def test_the_check_of_a_shut_off_vm_notes_the_offline_choice(api, vm):
    # An unregistered destination: the check contacts nothing, and still notes the mode.
    response = _migrate(api, _shut_off(vm), path="migrate/check/", remote_host="127.0.0.78")
    assert response.status_code == 200, response.json()
    assert any("checked as an offline migration" in note for note in response.json()["notes"])


@pytest.mark.django_db
def test_the_schema_says_how_live_is_chosen(api):
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    live = schemas["MigrateRequest"]["properties"]["live"]
    assert "default" not in live and "offline for a shut-off one" in live["description"]
    answer = api.get("/api/schema/?format=json").json()["paths"]["/api/vms/{uuid}/migrate/"]
    ref = answer["post"]["responses"]["202"]["content"]["application/json"]["schema"]["$ref"]
    requested = schemas[ref.rsplit("/", 1)[1]]
    assert "vm_shut_off" in requested["properties"]["live_from"]["description"]
    # A batch still defaults to live.
    assert schemas["BatchOptions"]["properties"]["live"]["default"] is True
