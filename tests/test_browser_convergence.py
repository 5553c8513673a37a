"""Chromium: the progress view says "not converging", then shows the policy's step, then
the end (issue #21). The copy is made unable to converge as in test_convergence_lab.py."""

from __future__ import annotations

import pytest
from django_q.brokers import get_broker

from migrations_app.models import Migration
from tests import labtools, test_browser_e2e
from tests.processes import PortalServer, Workers, free_port
from tests.test_browser_e2e import ARTIFACTS, _log_in, _migration_id, _open_migrate_dialog

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

page = test_browser_e2e.page  # the Chromium page fixture, shared


@pytest.fixture
def portal(tmp_path):
    """The web tier and the task workers, the workers judging a stall on one pass."""
    get_broker().purge_queue()
    workers = Workers(tmp_path / "workers.log", env={"PORTAL_MIGRATION_STALL_PASSES": "1"})
    server = PortalServer(tmp_path / "web.log", free_port())
    workers.start()
    server.start()
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()
        workers.kill()
        for started in (server, workers):
            print(f"--- {started.log.name} ---\n{started.log.read_text()[-4000:]}")


def _record_texts(page) -> None:
    """Keep every text the progress view's verdict and phase show, in order."""
    page.evaluate(
        """() => {
          const view = document.querySelector('#migrate-progress [data-progress-view]');
          window.__texts = [];
          const keep = () => {
            for (const name of ['convergence', 'phase']) {
              const el = view.querySelector('[data-field=' + name + ']');
              if (el.hidden || !el.textContent) continue;  // only what a person sees
              const text = el.textContent;
              if (window.__texts[window.__texts.length - 1] !== text) window.__texts.push(text);
            }
          };
          new MutationObserver(keep).observe(view, {subtree: true, childList: true,
                                                    characterData: true, attributes: true});
        }"""
    )


def test_not_converging_then_the_policy_pauses_then_it_ends(portal, page, linux_vm, api):
    from playwright.sync_api import expect

    source = linux_vm.source
    destination = linux_vm.other(source)
    _log_in(page, portal)
    dialog = _open_migrate_dialog(page, portal, linux_vm.uuid)
    dialog.locator("#mig-remote-host").fill(destination.name)
    dialog.locator("#mig-advanced summary").click()
    recommended = dialog.locator("#mig-convergence option[value=postcopy_when_stalled]")
    expect(recommended).to_contain_text("(recommended)")
    dialog.locator("#mig-convergence").select_option("pause_when_stalled")
    dialog.locator("#mig-bandwidth").fill("16")
    dialog.locator("#mig-downtime").fill("100")
    dialog.get_by_role("button", name="Start").click()
    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_have_attribute("data-status", "migrating", timeout=60_000)
    _record_texts(page)
    migration_id = _migration_id(page)
    labtools.wait_for(
        lambda: Migration.objects.filter(pk=migration_id, memory_iteration__gte=2).exists()
        or Migration.objects.exclude(status="migrating").filter(pk=migration_id).exists(),
        timeout=90,
        what="the second pass",
        interval=0.05,
    )
    # Steered from the dialog below what the guest dirties (8 MiB/s): it stops converging.
    tune = dialog.locator("[data-field=tune]")
    tune.get_by_label("Bandwidth (MiB/s, 0 = unlimited)").fill("2")
    tune.get_by_role("button", name="Apply").click()
    expect(dialog.locator("[data-field=limits]")).to_contain_text("bandwidth 2 MiB/s")

    expect(dialog.locator("[data-field=phase]")).to_have_text(
        "Guest paused by its policy so the copy finishes", timeout=90_000
    )
    expect(dialog.locator("[data-field=policy]")).to_contain_text("pause when stalled")
    labtools.lift_bandwidth_limit(api, migration_id)  # paused: nothing new to copy
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=90_000
    )
    dialog.screenshot(path=str(ARTIFACTS / "migrate-convergence-paused.png"))
    texts = page.evaluate("window.__texts")
    # Seen in this order: the verdict "not converging" shown, then the policy's step,
    # then the end (the outcome above).
    stalled = next(i for i, t in enumerate(texts) if t.startswith("not converging"))
    paused = texts.index("Guest paused by its policy so the copy finishes")
    assert stalled < paused, texts

    page.goto(f"{portal.url}/migrations/{migration_id}/")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("Convergence policy step")
    expect(timeline).to_contain_text("pause_when_stalled: pause, pass")
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [destination.name]
    assert page.js_errors == []
