"""The portal in a real browser: Debian's headless Chromium driven by Playwright, against
the production web tier (scripts/web.sh: gunicorn + uvicorn) and the django-q2 workers
(real processes on the test database) and the lab hosts. Logs in, uses the migrate
dialog, watches a real migration finish, and cancels one. Screenshots go to
test-artifacts/ (git-ignored)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from django_q.brokers import get_broker

from lab import layout
from migrations_app.models import Migration
from tests import labtools
from tests.processes import ROOT, PortalServer, Workers, free_port

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "admin-pass-123"  # the admin_user fixture's


@pytest.fixture
def portal(tmp_path):
    """The production web tier (gunicorn + 2 uvicorn workers: HTTP and websockets) and
    the task workers, on the test database."""
    get_broker().purge_queue()  # tasks of earlier in-process tests must not run here
    workers = Workers(tmp_path / "workers.log")
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


@pytest.fixture
def page(tmp_path, monkeypatch):
    """A Chromium page with a fresh profile. Fails (never skips) without a browser."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"NO BROWSER: {CHROMIUM} is missing. The end-to-end test drives Debian's "
            "chromium package: run scripts/install-system.sh (as root) to install it.",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"NO PLAYWRIGHT: {exc}. Run scripts/setup.sh (requirements.txt).")
    # Playwright's sync API runs an event loop in this thread; the ORM calls this test
    # makes between browser steps are plain blocking calls all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 1000},
            )
        except Exception as exc:
            pytest.fail(f"CHROMIUM DID NOT START ({CHROMIUM}): {exc}", pytrace=False)
        browser_page = context.new_page()
        browser_page.set_default_timeout(20_000)
        errors: list[str] = []
        browser_page.on("pageerror", lambda error: errors.append(str(error)))
        browser_page.js_errors = errors
        try:
            yield browser_page
        finally:
            context.close()
            shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _log_in(page, portal: PortalServer) -> None:
    page.goto(portal.url + "/")  # not logged in: sent to the login page
    assert "/login/" in page.url
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(portal.url + "/")
    assert page.locator("#hosts").is_visible()


def _open_migrate_dialog(page, portal: PortalServer, uuid: str, screenshot: str = ""):
    from playwright.sync_api import expect

    page.goto(f"{portal.url}/vms/{uuid}/")
    expect(page.locator("h1")).to_contain_text(layout.LINUX_VM_NAME)
    page.click("#vm-actions summary")
    if screenshot:
        page.screenshot(path=str(ARTIFACTS / screenshot))
    page.get_by_role("button", name="Migrate…").click()
    dialog = page.locator("#migrate-dialog")
    expect(dialog).to_be_visible()
    return dialog


def _start_even_if_warned(dialog) -> None:
    """Start; when the forecast warns that the copy will not converge without a policy
    (these tests cap it below what the guest dirties on purpose), start anyway."""
    dialog.get_by_role("button", name="Start", exact=True).click()
    dialog.page.wait_for_function(
        "() => !document.getElementById('migrate-progress').hidden"
        " || !document.getElementById('mig-forecast').hidden",
        timeout=60_000,
    )
    warning = dialog.locator("#mig-forecast")
    if warning.is_visible():
        warning.get_by_role("button", name="Start anyway").click()


def _record_percents(page) -> None:
    """Keep every percent the progress view shows (the data-percent it sets)."""
    page.evaluate(
        """() => {
          const view = document.querySelector('#migrate-progress [data-progress-view]');
          window.__percents = [];
          new MutationObserver(() => window.__percents.push(parseFloat(view.dataset.percent)))
            .observe(view, {attributes: true, attributeFilter: ['data-percent']});
        }"""
    )


def _migration_id(page) -> int:
    href = page.locator("#migrate-progress [data-field=detail-link]").get_attribute("href")
    return int(re.fullmatch(r"/migrations/(\d+)/", href)[1])


def test_migrate_from_the_dialog_and_watch_it_to_the_end(portal, page, linux_vm):
    from playwright.sync_api import expect

    source = linux_vm.source
    destination = linux_vm.other(source)
    _log_in(page, portal)
    dialog = _open_migrate_dialog(page, portal, linux_vm.uuid, screenshot="vm-page-actions.png")
    expect(dialog.locator("[data-field=disclaimer]")).to_contain_text("can take a long time")
    warning = dialog.locator("#mig-delete-warning")
    expect(warning).to_have_text(
        "Restarting the VM locally may cause resource conflicts with the migrated instance"
    )
    start = dialog.get_by_role("button", name="Start")

    # The two validation messages of the design.
    start.click()
    expect(dialog.locator("[data-error-for=remote_host]")).to_have_text(
        "Remote host field cannot be blank"
    )
    dialog.locator("#mig-user").fill("root")
    start.click()
    expect(dialog.locator("[data-error-for=password]")).to_have_text(
        "Both user and password fields must be filled"
    )
    dialog.locator("#mig-user").fill("")

    # A registered host offered as a choice; a field error only the API knows about.
    dialog.locator(f"#mig-host-choices [data-host='{destination.name}']").click()
    expect(dialog.locator("#mig-remote-host")).to_have_value(destination.name)
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("#mig-downtime").fill("50")
    start.click()
    expect(dialog.locator("[data-error-for=max_downtime_ms]")).to_contain_text(
        "Max downtime must be at least 100 ms"
    )
    expect(dialog.locator("[data-error-for=remote_host]")).to_be_hidden()
    dialog.locator("#mig-downtime").fill("")
    assert not Migration.objects.exists()  # nothing started by any of this

    dialog.locator("#mig-bandwidth").fill("30")
    dialog.get_by_label("Delete this VM when the migration is completed").check()
    expect(warning).to_be_hidden()
    dialog.screenshot(path=str(ARTIFACTS / "migrate-dialog.png"))

    start.click()
    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_be_visible(timeout=30_000)
    _record_percents(page)
    # Pre-checks passed, shown check by check before it started.
    assert dialog.locator("#mig-checks li.check-pass").count() >= 5
    outcome = dialog.locator("[data-field=outcome]")
    expect(outcome).to_contain_text("Migration succeeded", timeout=120_000)

    percents = page.evaluate("window.__percents")
    assert percents == sorted(percents), percents  # never went back
    assert percents[-1] == 100.0, percents
    intermediate = sorted({p for p in percents if 0 < p < 100})
    assert len(intermediate) >= 3, percents  # seen rising, not just jumping to the end
    expect(dialog.locator("[data-field=percent]")).to_have_text("100.0")
    for figure in ("total-time", "downtime", "moved"):
        expect(dialog.locator(f"[data-field={figure}]")).to_have_text(re.compile(r"^\d"))
    record = Migration.objects.get(pk=_migration_id(page))
    assert record.status == "succeeded", record.error
    assert (record.bandwidth_mib_s, record.delete_source) == (30, True)
    assert record.total_time_ms and record.total_time_ms > 2000  # bandwidth-limited
    assert record.downtime_ms is not None
    expect(dialog.locator("[data-field=downtime]")).to_contain_text("ms")
    dialog.screenshot(path=str(ARTIFACTS / "migrate-finished.png"))

    # libvirt says where it runs now; the source definition was deleted.
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}
    page.goto(f"{portal.url}/?host={destination.name}")
    row = page.locator(f"#vms tr[data-vm='{linux_vm.uuid}']")
    expect(row).to_contain_text(destination.name)
    expect(row).to_contain_text("Running")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.goto(f"{portal.url}/?host={source.name}")
    expect(page.locator(f"#vms tr[data-vm='{linux_vm.uuid}']")).to_have_count(0)

    # The migration's own page: outcome, timeline, chart drawn from the samples.
    page.goto(f"{portal.url}/migrations/{record.pk}/")
    expect(page.locator("#migration-status")).to_have_text("Succeeded")
    timeline = page.locator("#timeline")
    for label in ("Requested", "Migration started", "Transferring memory", "Succeeded"):
        expect(timeline).to_contain_text(label)
    expect(page.locator("#audit-events tr[data-event='migration.succeeded']")).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "migration-detail.png"), full_page=True)
    assert page.js_errors == []


def test_cancel_from_the_dialog(portal, page, linux_vm):
    from playwright.sync_api import expect

    source = linux_vm.source
    destination = linux_vm.other(source)
    _log_in(page, portal)
    dialog = _open_migrate_dialog(page, portal, linux_vm.uuid)
    dialog.locator("#mig-remote-host").fill(destination.name)
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("#mig-bandwidth").fill("8")  # slower than the guest dirties its memory
    _start_even_if_warned(dialog)
    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_have_attribute("data-status", "migrating", timeout=60_000)
    page.wait_for_function(
        "() => parseFloat(document.querySelector("
        "'#migrate-progress [data-progress-view]').dataset.percent) > 2",
        timeout=60_000,
    )
    migration_id = _migration_id(page)

    # The portal restarts under the open page: the page re-opens its socket by itself
    # and goes on from the snapshot the new connection starts with.
    connection = dialog.locator("[data-field=connection]")
    expect(connection).to_have_text("● live")
    portal.stop()
    expect(connection).to_contain_text("reconnecting")
    before = float(progress.get_attribute("data-percent"))
    portal.start()
    portal.wait_until_serving()
    expect(connection).to_have_text("● live", timeout=30_000)
    page.wait_for_function(
        "(before) => parseFloat(document.querySelector("
        "'#migrate-progress [data-progress-view]').dataset.percent) > before",
        arg=before,
        timeout=30_000,
    )

    dialog.get_by_role("button", name="Cancel migration").click()
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration cancelled", timeout=60_000
    )
    expect(dialog.locator("[data-field=controls]")).to_be_hidden()
    dialog.screenshot(path=str(ARTIFACTS / "migrate-cancelled.png"))
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "cancelled", (record.status, record.error)
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}
    assert page.js_errors == []


def test_switch_to_postcopy_from_the_dialog(portal, page, linux_vm):
    from playwright.sync_api import expect

    source = linux_vm.source
    destination = linux_vm.other(source)
    _log_in(page, portal)
    dialog = _open_migrate_dialog(page, portal, linux_vm.uuid)
    postcopy = dialog.get_by_role("button", name="Switch to post-copy")
    dialog.locator("#mig-remote-host").fill(destination.name)
    dialog.locator("#mig-advanced summary").click()
    dialog.locator("#mig-bandwidth").fill("8")  # would not converge by itself
    dialog.get_by_label("Allow switching to post-copy").check()
    dialog.get_by_label("Delete this VM when the migration is completed").check()
    _start_even_if_warned(dialog)
    progress = dialog.locator("#migrate-progress [data-progress-view]")
    expect(progress).to_have_attribute("data-status", "migrating", timeout=60_000)
    expect(postcopy).to_be_visible()  # offered only when allowed, while it migrates
    page.wait_for_function(
        "() => parseFloat(document.querySelector("
        "'#migrate-progress [data-progress-view]').dataset.percent) > 1",
        timeout=60_000,
    )
    postcopy.click()
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=90_000
    )
    record = Migration.objects.get(pk=_migration_id(page))
    assert record.postcopy_started_at is not None
    assert record.samples.filter(phase="postcopy").exists()
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}
    assert page.js_errors == []


def _migrate_from_dialog(
    page, portal: PortalServer, uuid: str, destination: str, transport: str = ""
) -> int:
    from playwright.sync_api import expect

    dialog = _open_migrate_dialog(page, portal, uuid)
    dialog.locator(f"#mig-host-choices [data-host='{destination}']").click()
    if transport:
        dialog.locator("#mig-advanced summary").click()
        dialog.locator("#mig-transport").select_option(transport)
    # The dialog's default: the source keeps its (shut-off) definition.
    expect(
        dialog.get_by_label("Delete this VM when the migration is completed")
    ).not_to_be_checked()
    dialog.get_by_role("button", name="Start").click()
    expect(dialog.locator("[data-field=outcome]")).to_contain_text(
        "Migration succeeded", timeout=120_000
    )
    return _migration_id(page)


def test_round_trip_from_the_dialog(portal, page, linux_vm):
    """There and back with the dialog's defaults: the definition left at home is the
    VM coming home, not a clash."""
    home = linux_vm.source
    away = linux_vm.other(home)
    _log_in(page, portal)
    there = _migrate_from_dialog(page, portal, linux_vm.uuid, away.name)
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {
        home.name: "shut off",
        away.name: "running",
    }
    back = _migrate_from_dialog(page, portal, linux_vm.uuid, home.name)
    page.screenshot(path=str(ARTIFACTS / "round-trip-home.png"))
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {
        home.name: "running",
        away.name: "shut off",
    }
    record = Migration.objects.get(pk=back)
    clash = next(c for c in record.checks if c["name"] == "no_name_or_uuid_clash")
    assert "comes home" in clash["message"], clash
    assert Migration.objects.get(pk=there).status == record.status == "succeeded"
    assert page.js_errors == []


def test_ssh_hosts_direct_and_tunnelled_from_the_dialog(portal, page, linux_vm, api):
    """Hosts reached over ssh that share nothing with the portal: the dialog migrates
    there directly and back tunnelled; each source uses a key of its own."""
    from hosts.access.models import PeerTrust
    from hosts.models import Host

    home = linux_vm.source
    away = linux_vm.other(home)
    for lab_host in (home, away):
        labtools.ssh_access(api, Host.objects.get(name=lab_host.name).pk, lab_host)
    _log_in(page, portal)
    there = _migrate_from_dialog(page, portal, linux_vm.uuid, away.name, transport="direct")
    back = _migrate_from_dialog(page, portal, linux_vm.uuid, home.name, transport="tunnelled")
    page.screenshot(path=str(ARTIFACTS / "ssh-tunnelled-home.png"))
    records = [Migration.objects.get(pk=pk) for pk in (there, back)]
    assert [(r.status, r.transport) for r in records] == [
        ("succeeded", "direct"),
        ("succeeded", "tunnelled"),
    ]
    assert sorted((t.source.name, t.destination.name) for t in PeerTrust.objects.all()) == sorted(
        [(home.name, away.name), (away.name, home.name)]
    )
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {
        home.name: "running",
        away.name: "shut off",
    }
    assert page.js_errors == []
