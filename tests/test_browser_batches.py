"""The batch page in a real browser (headless Chromium via Playwright) against the
production web tier (gunicorn + uvicorn), the django-q2 workers and the lab hosts:
per-VM rows and the overall progress follow a real batch live over its websocket to the
end. Screenshots in test-artifacts/."""

from __future__ import annotations

import pytest

from lab import layout
from migrations_app.models import Migration, MigrationBatch
from tests import labtools
from tests.test_browser_e2e import ARTIFACTS, _log_in, page, portal  # noqa: F401

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_batch_page_follows_a_batch_to_the_end(api, linux_vm, tiny_vm, portal, page):  # noqa: F811
    from playwright.sync_api import expect

    _log_in(page, portal)
    response = api.post(
        "/api/migration-batches/",
        {
            "items": [
                {"vm": linux_vm.uuid, "destination": linux_vm.other(linux_vm.source).name},
                {
                    "vm": tiny_vm.uuid,
                    "destination": tiny_vm.other(tiny_vm.source).name,
                    "options": {"storage": "copy"},
                },
            ],
            # Slow enough to be seen running.
            "options": {"delete_source": True, "bandwidth_mib_s": 30},
            "max_parallel": 1,
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    batch_id = response.json()["id"]
    first, second = Migration.objects.filter(batch_id=batch_id).order_by("pk")

    page.goto(f"{portal.url}/migration-batches/{batch_id}/")
    rows = page.locator("#batch-children tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(layout.LINUX_VM_NAME)
    expect(rows.nth(1)).to_contain_text(layout.TINY_VM_NAME)
    first_row = page.locator(f"tr[data-child='{first.pk}']")
    second_row = page.locator(f"tr[data-child='{second.pk}']")
    expect(page.locator("[data-field=connection]")).to_have_text("live")
    # The first VM migrates while the second waits for its turn (max_parallel 1).
    expect(first_row).to_have_attribute("data-status", "migrating", timeout=60_000)
    labtools.wait_for(
        lambda: float(first_row.locator("[data-field=percent]").inner_text()) > 5,
        timeout=60,
        what="the first row's percent to move",
        interval=0.3,
    )
    expect(second_row).to_have_attribute("data-status", "queued")
    expect(second_row.locator("[data-field=phase]")).to_have_text(
        "Waiting for its turn in the batch"
    )
    page.screenshot(path=str(ARTIFACTS / "batch-running.png"), full_page=True)

    expect(page.locator("#batch-status")).to_have_text("Succeeded", timeout=240_000)
    expect(page.locator("[data-field=vms-done]")).to_have_text("2")
    expect(page.locator("[data-field=vms-total]")).to_have_text("2")
    expect(page.locator("#batch-progress [data-field=percent]")).to_have_text("100.0")
    for row in (first_row, second_row):
        expect(row).to_have_attribute("data-status", "succeeded")
        expect(row.locator("[data-field=percent]")).to_have_text("100.0")
    moved = page.locator("[data-field=bytes-moved]").inner_text()
    assert "MiB" in moved
    assert page.locator("[data-field=bytes-total]").inner_text() == moved
    expect(page.locator("[data-field=controls]")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "batch-succeeded.png"), full_page=True)
    assert MigrationBatch.objects.get(pk=batch_id).status == "succeeded"
    assert page.js_errors == []
