"""Chromium: the migrate dialog warns that the copy will not converge (the forecast) and
lets the person start anyway; then they steer the running migration from the progress
view (max downtime, bandwidth), see libvirt's read-back, and it finishes (issue #21)."""

from __future__ import annotations

import pytest

from audit.events import EventType
from audit.models import AuditEvent
from lab import machines
from migrations_app.models import Migration
from tests import labtools, test_browser_e2e
from tests.test_browser_convergence import portal  # noqa: F401 (the web tier + workers)
from tests.test_browser_e2e import ARTIFACTS, _log_in, _migration_id, _open_migrate_dialog

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser_e2e.page  # the Chromium page fixture, shared


@pytest.fixture
def no_job_left(linux_vm):
    """A failure mid-way leaves no 2 MiB/s job running in libvirt for the next test."""
    yield
    for host in linux_vm.hosts:
        machines.virsh(host, "domjobabort", linux_vm.uuid, check=False, timeout=30)


def test_warned_then_started_anyway_then_tuned_live_from_the_dialog(
    portal,  # noqa: F811
    page,
    linux_vm,
    no_job_left,
):
    from playwright.sync_api import expect

    source = linux_vm.source
    destination = linux_vm.other(source)
    _log_in(page, portal)
    dialog = _open_migrate_dialog(page, portal, linux_vm.uuid)
    dialog.locator("#mig-remote-host").fill(destination.name)
    dialog.locator("#mig-advanced summary").click()
    # The guest rewrites 8 MiB/s: 2 MiB/s cannot carry it, and no policy is chosen.
    dialog.locator("#mig-bandwidth").fill("2")
    dialog.locator("#mig-downtime").fill("100")
    expect(dialog.locator("#mig-convergence")).to_have_value("none")
    with page.expect_response(lambda r: "/migrate/check/" in r.url, timeout=60_000) as checked:
        dialog.get_by_role("button", name="Start", exact=True).click()
    answer = checked.value.json()
    assert answer["convergence"]["outlook"] == "will_not_converge", answer["convergence"]

    forecast = dialog.locator("#mig-forecast")
    expect(forecast).to_be_visible(timeout=60_000)
    expect(forecast).to_contain_text("Will not converge without a policy: the guest changes")
    expect(forecast).to_contain_text("recommended: the policy postcopy_when_stalled")
    expect(forecast.locator("[data-action=use-recommended]")).to_have_text(
        "Use postcopy when stalled and start"
    )
    dialog.screenshot(path=str(ARTIFACTS / "migrate-forecast-warning.png"))
    assert Migration.objects.count() == 0  # warned, nothing started yet
    forecast.get_by_role("button", name="Start anyway").click()

    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_have_attribute("data-status", "migrating", timeout=60_000)
    migration_id = _migration_id(page)
    record = Migration.objects.get(pk=migration_id)
    assert record.convergence_policy == "none" and record.bandwidth_mib_s == 2
    limits = dialog.locator("[data-field=limits]")
    # Read back from libvirt once memory flows (the job's own parameter applied).
    expect(limits).to_have_text("downtime 100 ms · bandwidth 2 MiB/s", timeout=60_000)

    tune = dialog.locator("[data-field=tune]")
    expect(tune).to_be_visible()
    error = dialog.locator("[data-field=control-error]")
    # Bad input is the API's 400, naming the field.
    tune.get_by_label("Bandwidth (MiB/s, 0 = unlimited)").fill("-5")
    tune.get_by_role("button", name="Apply").click()
    expect(error).to_contain_text("bandwidth_mib_s:")
    assert Migration.objects.get(pk=migration_id).bandwidth_mib_s == 2

    tune.get_by_label("Max downtime (ms)").fill("300")
    tune.get_by_label("Bandwidth (MiB/s, 0 = unlimited)").fill("64")
    tune.get_by_role("button", name="Apply").click()
    expect(limits).to_have_text("downtime 300 ms · bandwidth 64 MiB/s", timeout=30_000)
    expect(error).to_be_hidden()
    dialog.screenshot(path=str(ARTIFACTS / "migrate-tuned.png"))
    record = Migration.objects.get(pk=migration_id)
    assert (record.max_downtime_ms, record.max_downtime_read_ms) == (300, 300)
    assert (record.bandwidth_mib_s, record.bandwidth_read_mib_s) == (64, 64)
    tuned = AuditEvent.objects.get(
        event_type=EventType.MIGRATION_TUNED, target_id=str(migration_id)
    )
    assert tuned.before == {"max_downtime_ms": 100, "bandwidth_mib_s": 2}
    assert tuned.after == {"max_downtime_ms": 300, "bandwidth_mib_s": 64}

    # Now faster than the guest dirties its memory: it converges and ends.
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=120_000
    )
    expect(tune).to_be_hidden()
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [destination.name]
    assert page.js_errors == []
