"""Accessibility, checked by axe-core (the npm package, node_modules/, installed by
scripts/setup.sh) injected into Chromium: every page and the migrate dialog in each state
(open, field errors, running, ended) has no serious or critical violation. And a VM is
migrated with the keyboard alone.

The same test takes docs/ui.md's screenshots of every page, in English and in Brazilian
Portuguese (axe runs over the Portuguese pages too): into test-artifacts/ui/, or into
docs/ui/ with `make ui-screenshots` (PORTAL_UI_SCREENSHOTS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrations_app.models import Migration, MigrationBatch
from tests import labtools
from tests.processes import ROOT
from tests.test_browser_e2e import ARTIFACTS, _log_in, page, portal  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
UI_SCREENSHOTS = Path(os.environ.get("PORTAL_UI_SCREENSHOTS") or ARTIFACTS / "ui")
_RUN_AXE = """async (scope) => {
  const result = await axe.run(scope ? document.querySelector(scope) : document,
                               {resultTypes: ['violations']});
  return result.violations
    .filter((v) => ['serious', 'critical'].includes(v.impact))
    .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                  nodes: v.nodes.slice(0, 4).map((n) => n.target.join(' '))}));
}"""


def _screenshot(browser_page, language: str, name: str) -> None:
    """The visible part of the page (1280 x 1000), as docs/ui.md shows it."""
    target = UI_SCREENSHOTS / language / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    browser_page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000, f"{target} is nearly empty"


def _axe(browser_page, where: str, scope: str = "") -> list[str]:
    if not browser_page.evaluate("typeof axe !== 'undefined'"):
        browser_page.add_script_tag(path=str(AXE))
    return [
        f"{where}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
        for v in browser_page.evaluate(_RUN_AXE, scope)
    ]


@pytest.fixture
def axe_installed():
    if not AXE.is_file():
        pytest.fail(f"NO AXE: {AXE} is missing: run scripts/setup.sh (npm ci)", pytrace=False)


def test_pages_and_dialog_pass_axe(portal, page, linux_vm, api, axe_installed):  # noqa: F811
    from playwright.sync_api import expect

    found: list[str] = []
    page.goto(portal.url + "/login/")
    found += _axe(page, "login")
    _log_in(page, portal)

    # Something in every list: one migration and one batch, through the API.
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = labtools.request_migration(api, linux_vm.uuid, remote_host=destination.name)
    labtools.wait_final(migration_id)
    batch = api.post(
        "/api/migration-batches/",
        {"items": [{"vm": linux_vm.uuid, "destination": source.name}]},
        format="json",
    ).json()
    labtools.wait_for(
        lambda: MigrationBatch.objects.get(pk=batch["id"]).status == "succeeded",
        timeout=180,
        what="the batch to succeed",
    )
    host_id = Migration.objects.get(pk=migration_id).source_id
    pages = [
        ("dashboard", "/"),
        ("host page", f"/hosts/{host_id}/"),
        ("VM page", f"/vms/{linux_vm.uuid}/"),
        ("migration list", "/migrations/"),
        ("migration page", f"/migrations/{migration_id}/"),
        ("batch page", f"/migration-batches/{batch['id']}/"),
        ("new batch", "/migration-batches/new/"),
        ("audit log", "/audit/"),
        ("report", "/reports/migrations/"),
        ("tokens", "/tokens/"),
        ("webhooks", "/webhooks/"),
    ]
    for where, path in pages:
        page.goto(portal.url + path)
        found += _axe(page, where)
        _screenshot(page, "en", where.replace(" ", "-").lower())

    # The same pages in Brazilian Portuguese (the browser asks for it; no cookie is set).
    page.context.set_extra_http_headers({"Accept-Language": "pt-BR,pt;q=0.9"})
    for where, path in pages:
        page.goto(portal.url + path)
        expect(page.locator("html")).to_have_attribute("lang", "pt-br")
        found += _axe(page, f"{where} (pt-br)")
        _screenshot(page, "pt-br", where.replace(" ", "-").lower())
    page.goto(f"{portal.url}/vms/{linux_vm.uuid}/")
    page.click("#vm-actions summary")
    page.get_by_role("button", name="Migrar…").click()
    expect(page.locator("#migrate-dialog")).to_be_visible()
    _screenshot(page, "pt-br", "migrate-dialog")
    page.context.set_extra_http_headers({"Accept-Language": "en"})

    # The dark theme (prefers-color-scheme) keeps its contrast.
    page.emulate_media(color_scheme="dark")
    for where, path in [
        ("dashboard (dark)", "/"),
        ("migration page (dark)", f"/migrations/{migration_id}/"),
        ("batch page (dark)", f"/migration-batches/{batch['id']}/"),
        ("host page (dark)", f"/hosts/{host_id}/"),
    ]:
        page.goto(portal.url + path)
        found += _axe(page, where)
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark == "rgb(15, 20, 28)", dark
    _screenshot(page, "en", "host-page-dark")
    page.emulate_media(color_scheme="light")

    # The migrate dialog: open, with errors, running, ended.
    page.goto(f"{portal.url}/vms/{linux_vm.uuid}/")
    page.click("#vm-actions summary")
    page.get_by_role("button", name="Migrate…").click()
    dialog = page.locator("#migrate-dialog")
    expect(dialog).to_be_visible()
    found += _axe(page, "dialog open", "#migrate-dialog")
    _screenshot(page, "en", "migrate-dialog")
    start = dialog.get_by_role("button", name="Start")
    start.click()
    error = dialog.locator("[data-error-for=remote_host]")
    expect(error).to_be_visible()
    # The error is tied to its field, which has the focus.
    field = dialog.locator("#mig-remote-host")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_attribute("aria-describedby", error.get_attribute("id"))
    expect(field).to_be_focused()
    found += _axe(page, "dialog with errors", "#migrate-dialog")
    dialog.locator(f"#mig-host-choices [data-host='{destination.name}']").click()
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("#mig-bandwidth").fill("40")
    start.click()
    expect(dialog.locator("#migrate-progress [data-progress-view]")).to_be_visible(timeout=30_000)
    found += _axe(page, "dialog running", "#migrate-dialog")
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=180_000
    )
    found += _axe(page, "dialog ended", "#migrate-dialog")
    _screenshot(page, "en", "migrate-dialog-ended")
    assert found == [], "\n".join(found)


def _tab_to(browser_page, selector: str, limit: int = 80) -> None:
    """Press Tab until the focused element matches `selector` (fails after `limit`)."""
    for _ in range(limit):
        if browser_page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        browser_page.keyboard.press("Tab")
    focused = browser_page.evaluate("document.activeElement?.outerHTML.slice(0, 120)")
    raise AssertionError(f"Tab never reached {selector} (focus on {focused})")


def test_a_vm_migrated_with_the_keyboard_alone(portal, page, linux_vm):  # noqa: F811
    from playwright.sync_api import expect

    destination = linux_vm.other(linux_vm.source)
    page.goto(portal.url + "/")
    _tab_to(page, "#id_username")
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type("admin-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(portal.url + "/")

    _tab_to(page, f"#vms a[href='/vms/{linux_vm.uuid}/']")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{portal.url}/vms/{linux_vm.uuid}/")
    _tab_to(page, "#vm-actions summary")
    page.keyboard.press("Enter")  # opens the Actions menu
    _tab_to(page, "[data-action=migrate]")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused button shows no focus ring"
    page.keyboard.press("Enter")
    dialog = page.locator("#migrate-dialog")
    expect(dialog).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "mig-remote-host"  # focus moved in
    page.keyboard.type(destination.name)
    _tab_to(page, "#mig-start")
    page.keyboard.press("Enter")
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=180_000
    )
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [destination.name]
    page.keyboard.press("Escape")  # the dialog closes from the keyboard too
    expect(dialog).to_be_hidden()
    assert page.js_errors == []
