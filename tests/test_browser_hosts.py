"""The host page and the ranked migrate dialog in a real browser (Debian's headless
Chromium through Playwright, against daphne and the workers on the test database, and
the lab hosts): open a host's page from the dashboard, put a host into maintenance,
see it ranked last and unfit in the migrate dialog, open the evacuation plan of the
VM's host and confirm it: the batch's page follows the evacuation to the end.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import pytest

from hosts.models import Host
from lab import core
from tests import labtools
from tests.test_browser_e2e import ARTIFACTS, _log_in, page, portal  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_host_page_maintenance_and_evacuation_plan(portal, page, linux_vm):  # noqa: F811
    from playwright.sync_api import expect

    source = linux_vm.source
    resting = linux_vm.other(source)
    _log_in(page, portal)

    # The dashboard's host row leads to the host page.
    page.click(f"#hosts tr[data-host='{resting.name}'] [data-field=host-link]")
    expect(page.locator("h1")).to_contain_text(resting.name)
    expect(page.locator("[data-field=maintenance-state]")).to_contain_text("Not in maintenance")
    page.fill("#maintenance-reason", "firmware update")
    page.click("#maintenance-submit")
    expect(page.locator("[data-field=maintenance-badge]")).to_be_visible()
    expect(page.locator("[data-field=maintenance-state]")).to_contain_text("firmware update")
    page.screenshot(path=str(ARTIFACTS / "host-maintenance.png"), full_page=True)
    assert Host.objects.get(name=resting.name).maintenance is True

    # The migrate dialog ranks it last and unfit, the recommended host first.
    page.goto(f"{portal.url}/vms/{linux_vm.uuid}/")
    page.click("#vm-actions summary")
    page.click("[data-action=migrate]")
    placements = page.locator("#mig-placements li[data-placement]")
    expect(placements.last).to_have_attribute("data-placement", resting.name)
    expect(placements.last).to_contain_text("in maintenance: firmware update")
    expect(placements.first.locator(".badge")).to_have_text("recommended")
    chips = page.locator("#mig-host-choices [data-host]")
    expect(chips.last).to_have_attribute("data-host", resting.name)
    expect(chips.last).to_have_class("chip unfit")
    expect(chips.first).to_have_class("chip recommended")
    page.screenshot(path=str(ARTIFACTS / "migrate-dialog-ranked.png"))
    page.locator("#migrate-dialog [data-action=close]").first.click()

    # The source's page: the evacuation plan, dry run first.
    source_id = Host.objects.get(name=source.name).pk
    page.goto(f"{portal.url}/hosts/{source_id}/")
    expect(page.locator("#host-vms")).to_contain_text(core.LINUX_VM_NAME)
    page.click("[data-action=evacuate]")
    row = page.locator(f"#evacuation-plan tr[data-vm='{core.LINUX_VM_NAME}']")
    expect(row).to_be_visible()
    destination = row.get_attribute("data-destination")
    assert destination not in (source.name, resting.name)
    expect(row).to_contain_text("CPU: ")
    expect(page.locator("#evacuate-confirm")).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS / "host-evacuation-plan.png"), full_page=True)

    # Confirm: the host enters maintenance and the evacuation batch's page follows it.
    page.click("#evacuate-confirm")
    page.wait_for_url(re.compile(r".*/migration-batches/\d+/$"))
    expect(page.locator("#batch-status")).to_have_text("Succeeded", timeout=240_000)
    page.screenshot(path=str(ARTIFACTS / "host-evacuated.png"), full_page=True)
    evacuated = Host.objects.get(name=source.name)
    assert evacuated.maintenance is True
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [destination]
    assert page.js_errors == []
