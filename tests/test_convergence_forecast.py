"""The forecast before a migration starts: will the copy converge? (a table, no hosts)
and how the check endpoint and the ranking answer it without a measurement."""

import pytest

from migrations_app.domain.convergence import (
    DEFAULT_LINK_BYTES_S,
    ConvergencePolicy,
    LinkBasis,
    Outlook,
    forecast,
)

MiB = 2**20
NONE = ConvergencePolicy.NONE
POSTCOPY = ConvergencePolicy.POSTCOPY_WHEN_STALLED


@pytest.mark.parametrize(
    "dirty, cap, link, policy, postcopy, outlook, recommended, rate, basis",
    [
        # The case: 16 MiB/s over a 10 MiB/s cap, the link much faster.
        (16, 10, 1000, NONE, True, Outlook.WILL_NOT_CONVERGE, POSTCOPY, 10, LinkBasis.MEASURED),
        # A quiet guest under the same cap.
        (1, 10, 1000, NONE, True, Outlook.CONVERGES, None, 10, LinkBasis.MEASURED),
        # Within 10 % of the cap counts as outpacing it (as the monitor's "outpaced").
        (9.5, 10, None, NONE, True, Outlook.WILL_NOT_CONVERGE, POSTCOPY, 10, LinkBasis.DEFAULT),
        (8.9, 10, None, NONE, True, Outlook.CONVERGES, None, 10, LinkBasis.DEFAULT),
        # No cap: the measured link is the limit.
        (16, 0, 12, NONE, True, Outlook.WILL_NOT_CONVERGE, POSTCOPY, 12, LinkBasis.MEASURED),
        (16, 0, 200, NONE, True, Outlook.CONVERGES, None, 200, LinkBasis.MEASURED),
        # A cap above the link: the link is the limit.
        (16, 500, 12, NONE, True, Outlook.WILL_NOT_CONVERGE, POSTCOPY, 12, LinkBasis.MEASURED),
        # Nothing measured between the hosts: 1 Gbit/s assumed.
        (
            16,
            0,
            None,
            NONE,
            True,
            Outlook.CONVERGES,
            None,
            DEFAULT_LINK_BYTES_S / MiB,
            LinkBasis.DEFAULT,
        ),
        (
            200,
            0,
            None,
            NONE,
            True,
            Outlook.WILL_NOT_CONVERGE,
            POSTCOPY,
            DEFAULT_LINK_BYTES_S / MiB,
            LinkBasis.DEFAULT,
        ),
        # Tunnelled: no post-copy, the pause that always ends it is recommended.
        (
            16,
            10,
            1000,
            NONE,
            False,
            Outlook.WILL_NOT_CONVERGE,
            ConvergencePolicy.PAUSE_WHEN_STALLED,
            10,
            LinkBasis.MEASURED,
        ),
    ],
)
def test_forecast_table(dirty, cap, link, policy, postcopy, outlook, recommended, rate, basis):
    found = forecast(
        dirty_rate_bytes_s=int(dirty * MiB),
        cap_mib_s=cap,
        measured_link_bytes_s=int(link * MiB) if link else None,
        policy=policy,
        postcopy_possible=postcopy,
    )
    assert found.outlook == outlook, found.message
    assert found.recommended_policy == (recommended.value if recommended else None)
    assert found.rate_bytes_s == int(rate * MiB)
    assert found.link_basis == basis
    assert found.warns == (outlook == Outlook.WILL_NOT_CONVERGE)
    assert found.message.startswith(
        {
            Outlook.WILL_NOT_CONVERGE: "will not converge without a policy: ",
            Outlook.CONVERGES: "should converge: ",
        }[outlook]
    )


def test_the_message_names_the_figures_the_limit_and_the_advice():
    found = forecast(
        dirty_rate_bytes_s=16 * MiB, cap_mib_s=10, measured_link_bytes_s=None, policy=NONE
    )
    assert found.message == (
        "will not converge without a policy: the guest changes 16 MiB/s, the copy may move "
        "10 MiB/s (the bandwidth cap); recommended: the policy postcopy_when_stalled, or a "
        "cap above 19 MiB/s"
    )
    slow_link = forecast(
        dirty_rate_bytes_s=16 * MiB, cap_mib_s=0, measured_link_bytes_s=12 * MiB, policy=NONE
    )
    assert "(the link (the fastest uncapped migration between these hosts))" in (slow_link.message)
    assert "a cap above" not in slow_link.message  # the link itself is too slow


def test_a_chosen_policy_is_named_instead_of_the_recommendation():
    found = forecast(
        dirty_rate_bytes_s=16 * MiB,
        cap_mib_s=10,
        measured_link_bytes_s=None,
        policy=ConvergencePolicy.PAUSE_WHEN_STALLED,
    )
    assert found.outlook == Outlook.WILL_NOT_CONVERGE
    assert "the policy pause_when_stalled acts when it stalls" in found.message
    assert "recommended" not in found.message


def test_not_measured_is_unknown_with_the_reason_and_no_warning():
    found = forecast(
        dirty_rate_bytes_s=None,
        cap_mib_s=10,
        measured_link_bytes_s=None,
        policy=NONE,
        not_measured_why="the VM is paused: it changes no memory",
    )
    assert found.outlook == Outlook.UNKNOWN
    assert not found.warns
    assert found.recommended_policy is None
    assert found.message == "not predicted: the VM is paused: it changes no memory"


# --- Through the API, hosts recorded in the database (their libvirt refuses at once) ---


@pytest.fixture
def pair(db):
    from django.core.cache import cache

    from tests.test_placement_api import _host, _vm

    cache.clear()
    src, dst = _host("src", 201), _host("dst", 202)
    return src, dst, _vm(src, "busy")


def _check(api, vm, query="", **body):
    return api.post(
        f"/api/vms/{vm.uuid}/migrate/check/{query}", {"remote_host": "dst", **body}, format="json"
    )


def _past_migration(src, dst, *, throughput_mib_s: float) -> None:
    """An uncapped migration that succeeded between the hosts, its fastest sample given."""
    from django.utils import timezone

    from migrations_app.models import Migration, MigrationSample

    done = Migration.objects.create(
        vm_uuid="6c2a0a4c-0000-4000-8000-000000000001",
        vm_name="earlier",
        source=src,
        destination=dst,
        status="succeeded",
        max_downtime_ms=500,
        timeout_s=600,
    )
    MigrationSample.objects.create(
        migration=done,
        taken_at=timezone.now(),
        elapsed_ms=1000,
        phase="copying",
        percent=50,
        throughput_bytes_s=int(throughput_mib_s * MiB),
    )


def test_the_check_says_why_it_did_not_predict_and_passes_no_warning(api, pair):
    _src, _dst, vm = pair
    body = _check(api, vm).json()
    assert body["convergence"]["outlook"] == "unknown"
    assert body["convergence"]["message"].startswith("not predicted: libvirt did not measure")
    assert body["warnings"] == []


def test_the_check_warns_and_recommends_from_a_reading_and_the_cap(api, pair):
    from django.core.cache import cache

    src, _dst, vm = pair
    cache.set(f"dirty-rate:{src.pk}:{vm.uuid}", 16 * MiB, 60)  # as a measurement leaves it
    body = _check(api, vm, "?dirty_rate_s=0", bandwidth_mib_s=10).json()
    forecast_ = body["convergence"]
    assert forecast_["outlook"] == "will_not_converge"
    assert forecast_["recommended_policy"] == "postcopy_when_stalled"
    assert (forecast_["dirty_rate_bytes_s"], forecast_["rate_bytes_s"]) == (16 * MiB, 10 * MiB)
    assert body["warnings"] == [forecast_["message"]]
    # A warning is never a failed check: what fails here is the unreachable hosts.
    assert {c["name"] for c in body["checks"] if c["status"] == "fail"} == {
        "source_reachable",
        "destination_reachable",
    }
    # Uncapped, over the link measured between them (12 MiB/s), it still would not.
    _past_migration(src, pair[1], throughput_mib_s=12)
    body = _check(api, vm, "?dirty_rate_s=0").json()
    assert body["convergence"]["link_basis"] == "measured"
    assert body["convergence"]["outlook"] == "will_not_converge"
    ranking = api.get(f"/api/vms/{vm.uuid}/destinations/?dirty_rate_s=0").json()
    (dst_row,) = ranking["destinations"]
    assert dst_row["convergence"]["outlook"] == "will_not_converge"
    assert dst_row["reasons"][-1].startswith("will not converge without a policy")
    # Quiet: no warning, no reason.
    cache.set(f"dirty-rate:{src.pk}:{vm.uuid}", 1 * MiB, 60)
    assert _check(api, vm, "?dirty_rate_s=0").json()["warnings"] == []
    ranking = api.get(f"/api/vms/{vm.uuid}/destinations/?dirty_rate_s=0").json()
    assert ranking["destinations"][0]["convergence"]["outlook"] == "converges"
    assert not any("converge" in r for r in ranking["destinations"][0]["reasons"])


def test_offline_has_no_forecast(api, pair):
    from tests.test_placement_api import _vm

    off = _vm(pair[0], "off", state="shutoff")
    body = _check(api, off, live=False).json()
    assert body["convergence"] is None and body["warnings"] == []


@pytest.mark.parametrize("value", ["3", "-1", "x"])
def test_dirty_rate_s_bad_values_are_400_naming_it(api, pair, value):
    _src, _dst, vm = pair
    response = _check(api, vm, f"?dirty_rate_s={value}")
    assert response.status_code == 400
    assert list(response.json()) == ["dirty_rate_s"]
    response = api.get(f"/api/vms/{vm.uuid}/destinations/?dirty_rate_s={value}")
    assert response.status_code == 400
    assert list(response.json()) == ["dirty_rate_s"]


def test_a_migrating_vm_is_not_measured(api, pair):
    """libvirt's state lock is held by the migration: a calculation would wait ~30 s."""
    from migrations_app.models import Migration

    src, dst, vm = pair
    Migration.objects.create(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        source=src,
        destination=dst,
        status="migrating",
        max_downtime_ms=500,
        timeout_s=600,
    )
    body = _check(api, vm).json()
    assert body["convergence"]["message"] == "not predicted: the VM is migrating now"
