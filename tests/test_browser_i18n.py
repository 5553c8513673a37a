"""A whole migration in Portuguese in Chromium (issue 23, languages), against the
production web tier, the workers and the lab hosts: the browser asks for pt-BR
(Accept-Language), the pages, the dialog's scripts and the API's errors answer in
Portuguese, numbers are written the Brazilian way; then the header's switcher picks
Chinese and every page after it stays Chinese. Screenshots: test-artifacts/i18n-*.png."""

from __future__ import annotations

import re

import pytest

from migrations_app.models import Migration
from tests import labtools
from tests.test_browser_e2e import ARTIFACTS, PASSWORD, page, portal  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def compiled_catalogues():
    """The .mo files, as scripts/setup.sh makes them; the web tier reads them at start."""
    from django.core.management import call_command

    call_command("compilemessages", ignore_patterns=[".venv", "node_modules", "var*"], verbosity=0)


def test_a_migration_in_portuguese_and_the_switcher_remembered(page, portal, linux_vm):  # noqa: F811
    from playwright.sync_api import expect

    source = linux_vm.source
    destination = linux_vm.other(source)
    page.context.set_extra_http_headers({"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"})

    # The login page already speaks Portuguese.
    page.goto(portal.url + "/")
    assert "/login/" in page.url
    expect(page.locator("html")).to_have_attribute("lang", "pt-br")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url(portal.url + "/")
    expect(page.get_by_role("link", name="Painel")).to_be_visible()
    expect(page.locator("#language-select")).to_have_value("pt-br")

    # The VM page and the migrate dialog.
    page.goto(f"{portal.url}/vms/{linux_vm.uuid}/")
    page.click("#vm-actions summary")
    page.get_by_role("button", name="Migrar…").click()
    dialog = page.locator("#migrate-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("[data-field=disclaimer]")).to_contain_text("migração ao vivo")
    start = dialog.get_by_role("button", name="Iniciar")
    # The scripts' own check (Django's JavaScript catalogue) ...
    start.click()
    expect(dialog.locator("[data-error-for=remote_host]")).to_have_text(
        "O campo host remoto não pode ficar em branco"
    )
    # ... and the API's error in the request's language, under its field.
    dialog.locator(f"#mig-host-choices [data-host='{destination.name}']").click()
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("#mig-downtime").fill("50")
    start.click()
    expect(dialog.locator("[data-error-for=max_downtime_ms]")).to_contain_text(
        "O tempo de parada máximo deve ser de pelo menos 100 ms"
    )
    dialog.locator("#mig-downtime").fill("")
    dialog.locator("#mig-bandwidth").fill("40")
    assert not Migration.objects.exists()
    dialog.screenshot(path=str(ARTIFACTS / "i18n-pt-migrate-dialog.png"))

    start.click()
    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_be_visible(timeout=30_000)
    outcome = dialog.locator("[data-field=outcome]")
    expect(outcome).to_contain_text("Migração concluída com sucesso", timeout=120_000)
    expect(dialog.locator("[data-field=status]")).to_have_text("Concluída com sucesso")
    # Numbers the Brazilian way (Intl.NumberFormat with the page's lang): a decimal comma.
    expect(dialog.locator("[data-field=percent]")).to_have_text("100,0")
    expect(dialog.locator("[data-field=moved]")).to_have_text(
        re.compile(r"^\d+(,\d)? (B|KiB|MiB|GiB)$")
    )
    dialog.screenshot(path=str(ARTIFACTS / "i18n-pt-migrate-finished.png"))
    record = Migration.objects.get()
    assert record.status == "succeeded", record.error
    assert labtools.where(linux_vm.hosts, linux_vm.uuid)[destination.name] == "running"

    # The migration's page in Portuguese; the API's enum values stay English.
    page.goto(f"{portal.url}/migrations/{record.pk}/")
    expect(page.locator("#migration-status")).to_have_text("Concluída com sucesso")
    expect(page.locator("#timeline")).to_contain_text("Migração iniciada")
    assert (
        page.evaluate(
            f"fetch('/api/migrations/{record.pk}/').then(r => r.json()).then(m => m.status)"
        )
        == "succeeded"
    )

    # The switcher: Chinese, remembered (a cookie) on every page after, whatever the
    # browser's Accept-Language says.
    page.select_option("#language-select", "zh-hans")
    page.locator("#language-switcher button").click()
    page.wait_for_url(f"{portal.url}/migrations/{record.pk}/")
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.locator("#migration-status")).to_have_text("成功")
    page.goto(f"{portal.url}/migrations/")
    expect(page.locator("h1")).to_have_text("迁移")
    expect(page.locator("#language-select")).to_have_value("zh-hans")
    page.goto(f"{portal.url}/?host={destination.name}")
    expect(page.get_by_role("link", name="仪表板")).to_be_visible()
    expect(page.locator(f"#vms tr[data-vm='{linux_vm.uuid}']")).to_contain_text("运行中")
    page.screenshot(path=str(ARTIFACTS / "i18n-zh-dashboard.png"), full_page=True)
    assert page.js_errors == []
