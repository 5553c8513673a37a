"""The migrate dialog's schedule fields in a real browser (Chromium, Playwright) whose
time zone is not the server's: "Start at" / "Window ends" are read in the browser's
time and reach the API as the same instants; the progress view shows the migration
scheduled, and it is cancelled from there before it starts."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from migrations_app.models import Migration
from tests import labtools
from tests.test_browser_e2e import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    _log_in,
    _migration_id,
    _open_migrate_dialog,
    portal,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Far from UTC (the server's zone), with daylight saving time in November.
BROWSER_ZONE = "Pacific/Auckland"


@pytest.fixture
def zoned_page(tmp_path, monkeypatch):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"NO BROWSER: {CHROMIUM} is missing.", pytrace=False)
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
            timezone_id=BROWSER_ZONE,
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.js_errors = errors
        try:
            yield page
        finally:
            context.close()
            shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_schedule_from_the_dialog_in_the_browsers_time_zone(portal, zoned_page, linux_vm):  # noqa: F811
    from playwright.sync_api import expect

    page = zoned_page
    source = linux_vm.source
    destination = linux_vm.other(source)
    start = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    end = start + timedelta(hours=2)
    local = ZoneInfo(BROWSER_ZONE)

    _log_in(page, portal)
    dialog = _open_migrate_dialog(page, portal, linux_vm.uuid)
    dialog.locator("#mig-remote-host").fill(destination.name)
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("#mig-not-before").fill(start.astimezone(local).strftime("%Y-%m-%dT%H:%M"))
    dialog.locator("#mig-window-end").fill(end.astimezone(local).strftime("%Y-%m-%dT%H:%M"))
    dialog.screenshot(path=str(ARTIFACTS / "migrate-schedule-fields.png"))
    dialog.get_by_role("button", name="Start").click()
    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_have_attribute("data-status", "scheduled", timeout=30_000)
    expect(progress.locator("[data-field=status]")).to_have_text("Scheduled")
    expect(progress.locator("[data-field=phase]")).to_contain_text("starts")
    dialog.screenshot(path=str(ARTIFACTS / "migrate-scheduled.png"))

    record = Migration.objects.get(pk=_migration_id(page))
    assert record.status == "scheduled"
    assert (record.not_before, record.window_end) == (start, end)

    dialog.get_by_role("button", name="Cancel migration").click()
    expect(dialog.locator("[data-field=outcome]")).to_contain_text("Migration cancelled")
    record.refresh_from_db()
    assert record.status == "cancelled" and record.started_at is None
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}
    assert page.js_errors == []
