"""The host page and the ranked migrate dialog in a real browser (Debian's headless
Chromium through Playwright, against the production web tier (gunicorn + uvicorn) and
the workers on the test database, and the lab hosts): open a host's page from the
dashboard, put a host into maintenance, see it ranked last and unfit in the migrate
dialog, open the evacuation plan of the VM's host and confirm it: the batch's page
follows the evacuation to the end. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import pytest

from hosts.models import Host
from lab import layout, lifecycle, machines
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
    # The API call and the page's reload: give a busy machine time.
    expect(page.locator("[data-field=maintenance-badge]")).to_be_visible(timeout=30_000)
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
    expect(page.locator("#host-vms")).to_contain_text(layout.LINUX_VM_NAME)
    page.click("[data-action=evacuate]")
    row = page.locator(f"#evacuation-plan tr[data-vm='{layout.LINUX_VM_NAME}']")
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


def _overlap(intervals: list[tuple]) -> int:
    """The most intervals (start, end) open at one time."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


def test_evacuating_a_host_with_four_vms_from_the_browser(
    portal,  # noqa: F811
    page,  # noqa: F811
    api,
    linux_vm,
    tiny_vm,
    lab_config,
):
    """Issue #11's case: a host running 4+ VMs (the lab's two and two small extra
    guests, three of them) is evacuated from its page over the two other hosts. Every VM moves, the
    per-host limits hold, the host ends empty and in maintenance, and the batch page
    shows the progress all along."""
    import dataclasses

    from django.conf import settings
    from playwright.sync_api import expect

    from migrations_app.models import Migration, MigrationBatch

    source = linux_vm.source
    # lab-vm and three small extra guests (and lab-tiny, if it runs there too).
    config = dataclasses.replace(lab_config, extra_vms=3)
    labtools.remove_extra_guests(config)
    hosts = lifecycle.up(config, hosts=len(linux_vm.hosts))
    try:
        for lab_host in hosts:
            refreshed = api.post(f"/api/hosts/{Host.objects.get(name=lab_host.name).pk}/refresh/")
            assert refreshed.json()["status"] == "reachable"
        running_before = machines.virsh(source, "list", "--name").stdout.split()
        assert len(running_before) >= 4, running_before

        _log_in(page, portal)
        source_host = Host.objects.get(name=source.name)
        page.goto(f"{portal.url}/hosts/{source_host.pk}/")
        page.click("[data-action=evacuate]")
        rows = page.locator("#evacuation-plan tr[data-vm]")
        expect(rows).to_have_count(len(running_before))
        planned = {
            rows.nth(i).get_attribute("data-vm"): rows.nth(i).get_attribute("data-destination")
            for i in range(rows.count())
        }
        assert set(planned) == set(running_before)
        assert set(planned.values()) == {h.name for h in hosts} - {source.name}
        page.screenshot(path=str(ARTIFACTS / "evacuation-four-plan.png"), full_page=True)

        page.click("#evacuate-confirm")
        page.wait_for_url(re.compile(r".*/migration-batches/\d+/$"))
        # Every figure the page shows while it runs: VMs done, kept as they change.
        page.evaluate(
            """() => {
              const done = document.querySelector('#batch-progress [data-field=vms-done]');
              window.__done = [done.textContent];
              new MutationObserver(() => window.__done.push(done.textContent))
                .observe(done, {childList: true, characterData: true, subtree: true});
            }"""
        )
        expect(page.locator("#batch-status")).to_have_text("Succeeded", timeout=300_000)
        page.screenshot(path=str(ARTIFACTS / "evacuation-four-done.png"), full_page=True)
        shown = [int(v) for v in page.evaluate("() => window.__done")]
        assert shown == sorted(shown) and shown[-1] == len(planned), shown
        assert len(set(shown)) >= 3, f"the page did not follow the batch: {shown}"

        batch = MigrationBatch.objects.get(pk=int(page.url.rstrip("/").rsplit("/", 1)[1]))
        children = list(Migration.objects.filter(batch=batch))
        assert {c.vm_name: c.destination.name for c in children} == planned
        assert {c.status for c in children} == {"succeeded"}
        # The per-host limits held the whole time.
        spans = [(c.started_at, c.finished_at) for c in children]
        assert _overlap(spans) <= settings.MIGRATION_MAX_OUTGOING_PER_HOST
        for name in set(planned.values()):
            incoming = [
                (c.started_at, c.finished_at) for c in children if c.destination.name == name
            ]
            assert _overlap(incoming) <= settings.MIGRATION_MAX_INCOMING_PER_HOST
        # The host is empty and stays in maintenance; every VM runs where the plan said.
        assert machines.virsh(source, "list", "--name").stdout.split() == []
        assert Host.objects.get(pk=source_host.pk).maintenance is True
        for vm_name, destination in planned.items():
            assert (
                vm_name
                in machines.virsh(
                    next(h for h in hosts if h.name == destination), "list", "--name"
                ).stdout.split()
            )
        assert page.js_errors == []
    finally:
        labtools.remove_extra_guests(config)


def test_the_host_page_follows_virsh_at_once(portal, page, tiny_vm):  # noqa: F811
    """The host page's VM state changes by itself (event listener, /ws/inventory/) when
    someone uses virsh beside the portal."""
    from playwright.sync_api import expect

    from listeners.models import HostListener, ListenerState

    first = tiny_vm.source
    host = Host.objects.get(name=first.name)
    labtools.wait_for(
        lambda: HostListener.objects.filter(host=host, state=ListenerState.LISTENING).exists(),
        timeout=60,
        what="the workers' listener to listen to the host",
    )
    _log_in(page, portal)
    page.goto(f"{portal.url}/hosts/{host.pk}/")
    expect(page.locator("[data-field=listener-state]")).to_have_text("Listening")
    state = page.locator(f"[data-live-state='{tiny_vm.uuid}@{first.name}']")
    expect(state).to_have_text("Running")
    page.wait_for_timeout(500)  # the page's websocket is open by now
    try:
        machines.virsh(first, "destroy", tiny_vm.uuid)
        expect(state).to_have_text("Shut off", timeout=1_500)
        expect(state).to_have_attribute("title", "libvirt: destroyed")
        page.screenshot(path=str(ARTIFACTS / "host-page-live-state.png"), full_page=True)
        machines.virsh(first, "start", tiny_vm.uuid)
        expect(state).to_have_text("Running", timeout=1_500)
    finally:
        if labtools.domstate(first, tiny_vm.uuid) != "running":
            machines.virsh(first, "start", tiny_vm.uuid, check=False)
