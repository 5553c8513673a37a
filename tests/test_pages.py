"""The server-rendered pages (Django's test client; no lab, no browser)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.models import Host
from migrations_app.domain.lifecycle import FailureReason, MigrationStatus, Phase
from migrations_app.models import Migration, MigrationSample
from tests.grants import grant
from vms.models import VM

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts() -> dict[str, Host]:
    return {
        "alpha": Host.objects.create(
            name="alpha",
            address="192.0.2.10",
            status="reachable",
            arch="x86_64",
            memory_total_bytes=8 * 2**30,
            memory_free_bytes=3 * 2**30,
        ),
        "beta": Host.objects.create(name="beta", address="192.0.2.11", status="reachable"),
        "gamma": Host.objects.create(
            name="gamma", address="192.0.2.12", status="unreachable", last_error="refused"
        ),
    }


def _vm(host: Host, name: str, state: str = "running", vm_uuid=None) -> VM:
    return VM.objects.create(
        uuid=vm_uuid or uuid.uuid4(),
        name=name,
        host=host,
        state=state,
        persistent=True,
        vcpus=2,
        memory_kib=512 * 1024,
        max_memory_kib=512 * 1024,
        arch="x86_64",
        last_synced_at=timezone.now(),
    )


def _migration(vm: VM, destination: Host, user, **fields) -> Migration:
    values = {
        "vm_uuid": vm.uuid,
        "vm_name": vm.name,
        "source": vm.host,
        "destination": destination,
        "requested_by": user,
        "requested_by_name": user.username,
        "max_downtime_ms": 500,
        "timeout_s": 600,
        **fields,
    }
    return Migration.objects.create(**values)


def _rows(page: str, table_id: str) -> list[str]:
    body = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', page, re.S)[1]
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)


# --- login, navigation ----------------------------------------------------------------


def test_pages_need_login(hosts):
    anonymous = Client()
    vm = _vm(hosts["alpha"], "web-1")
    for url in ["/", f"/vms/{vm.uuid}/", "/migrations/", "/migrations/1/"]:
        response = anonymous.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url


def test_login_page_logs_in_and_out(admin_user):
    client = Client()
    page = client.get("/login/").content.decode()
    assert 'name="username"' in page and 'name="password"' in page
    wrong = client.post("/login/", {"username": "admin", "password": "nope"})
    assert "didn't match" in wrong.content.decode()
    response = client.post("/login/", {"username": "admin", "password": "admin-pass-123"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_navigation_links_every_section(browser):
    page = browser.get("/").content.decode()
    for href in [
        'href="/"',
        'href="/migrations/"',
        'href="/audit/"',
        'href="/reports/migrations/"',
    ]:
        assert href in page, href
    assert "Log out admin" in page


def test_static_scripts_exist_and_send_the_csrf_token():
    portal_js = finders.find("portal/portal.js")
    migrate_js = finders.find("portal/migrate.js")
    assert portal_js and migrate_js and finders.find("portal/portal.css")
    source = open(portal_js).read()
    assert 'headers["X-CSRFToken"] = cookie("csrftoken")' in source
    assert "/ws/migrations/" in source and "ws://" in source


def test_the_browser_gets_the_labels_from_the_vocabulary(browser):
    """Statuses, phases and failure reasons reach the JS through json_script in every
    page; the scripts keep no copy of their own."""
    for url in ("/", "/migrations/", "/audit/"):
        page = browser.get(url).content.decode()
        vocabulary = json.loads(
            re.search(r'id="portal-vocabulary"[^>]*>(.*?)</script>', page, re.S)[1]
        )
        assert vocabulary == {
            "status_labels": dict(MigrationStatus.choices),
            "final_statuses": ["succeeded", "failed", "cancelled"],
            "phase_labels": dict(Phase.choices),
            "failure_reason_labels": dict(FailureReason.choices),
        }
    scripts = "".join(
        open(finders.find(f"portal/{name}")).read() for name in ("portal.js", "migrate.js")
    )
    copies = [
        label
        for choices in (MigrationStatus, Phase, FailureReason)
        for label in choices.labels
        if f'"{label}"' in scripts
    ]
    assert copies == []


# --- dashboard ------------------------------------------------------------------------


def test_dashboard_lists_hosts_with_active_migrations_and_filters_vms(browser, admin_user, hosts):
    web = _vm(hosts["alpha"], "web-1")
    _vm(hosts["alpha"], "db-1", state="shut_off")
    _vm(hosts["beta"], "web-2")
    _vm(hosts["beta"], "old-1", state="gone")
    _migration(web, hosts["beta"], admin_user, status="migrating", percent=42.0)

    page = browser.get("/").content.decode()
    rows = _rows(page.replace("\xa0", " "), "hosts")
    host_rows = {re.search(r"<td><a[^>]*>(\w+)</a>", r)[1]: r for r in rows}
    assert set(host_rows) == {"alpha", "beta", "gamma"}
    assert "3.0 GB / 8.0 GB" in host_rows["alpha"]
    assert re.search(r'data-field="active-migrations"><a [^>]*>1</a>', host_rows["alpha"])
    assert re.search(r'data-field="active-migrations"><a [^>]*>1</a>', host_rows["beta"])
    assert 'data-field="active-migrations">0<' in host_rows["gamma"]
    assert "refused" in host_rows["gamma"]
    # The running migration is listed with a link to its page.
    active = _rows(page, "active-migrations")
    assert len(active) == 1 and "42.0 %" in active[0] and "alpha → beta" in active[0]

    def vm_names(query: str) -> list[str]:
        listing = browser.get("/" + query).content.decode()
        return [re.search(r"<a [^>]*>([\w-]+)</a>", r)[1] for r in _rows(listing, "vms")]

    assert vm_names("") == ["db-1", "web-1", "web-2"]  # gone definitions hidden
    assert vm_names("?search=web") == ["web-1", "web-2"]
    assert vm_names("?host=beta") == ["web-2"]
    assert vm_names("?state=shut_off") == ["db-1"]
    assert vm_names("?state=gone") == ["old-1"]
    assert vm_names(f"?search={str(web.uuid)[:8]}") == ["web-1"]
    empty = browser.get("/?search=nothing-like-this").content.decode()
    assert "No VM matches these filters." in empty
    assert f'href="/vms/{web.uuid}/"' in page


# --- VM page and the migrate dialog ---------------------------------------------------


def test_vm_page_shows_the_vm_and_the_migrate_dialog(browser, hosts):
    vm = _vm(hosts["alpha"], "web-1")
    page = browser.get(f"/vms/{vm.uuid}/").content.decode()
    assert "<h1>web-1" in page and str(vm.uuid) in page
    assert 'data-action="migrate"' in page
    dialog = re.search(r'<dialog id="migrate-dialog".*?</dialog>', page, re.S)[0]
    assert f'data-vm-uuid="{vm.uuid}"' in dialog and 'data-live="true"' in dialog
    # Registered hosts are offered, the VM's own host is not.
    datalist = re.search(r'<datalist id="mig-hosts">(.*?)</datalist>', dialog)[1]
    offered = re.findall(r'<option value="(\w+)">', datalist)
    assert offered == ["beta", "gamma"]
    assert re.findall(r'class="chip" data-host="(\w+)"', dialog) == ["beta", "gamma"]
    assert "live migration" in dialog and "can take a long time" in dialog
    assert "turned off" in dialog
    assert "Delete this VM when the migration is completed" in dialog
    assert "Restarting the VM locally may cause resource conflicts" in dialog
    assert "password-less ssh" in dialog and "full sudo rights without a password" in dialog
    assert '<details class="advanced"' in dialog
    for name in [
        "remote_host",
        "user",
        "password",
        "delete_source",
        "storage",
        "transport",
        "bandwidth_mib_s",
        "max_downtime_ms",
        "auto_converge",
        "allow_postcopy",
        "compressed",
        "compression_method",
        "compression_level",
        "parallel_connections",
        "new_name",
        "convergence_policy",
        # The progress view's live tune control.
        "tune_max_downtime_ms",
        "tune_bandwidth_mib_s",
    ]:
        assert f'name="{name}"' in dialog, name
    assert ">Cancel</button>" in dialog and ">Start</button>" in dialog
    assert ">Cancel migration</button>" in dialog
    # The forecast's warning (filled by migrate.js) and the read-back limits.
    assert 'id="mig-forecast"' in dialog and ">Start anyway</button>" in dialog
    assert 'data-field="limits"' in dialog and 'data-action="tune"' in dialog
    assert "portal/migrate.js" in page


def test_vm_page_for_a_shut_off_vm_offers_an_offline_migration(browser, hosts):
    vm = _vm(hosts["alpha"], "db-1", state="shut_off")
    page = browser.get(f"/vms/{vm.uuid}/").content.decode()
    dialog = re.search(r'<dialog id="migrate-dialog".*?</dialog>', page, re.S)[0]
    assert 'data-live="false"' in dialog
    assert "offline migration" in dialog and "live migration" not in dialog
    assert re.search(r'name="allow_postcopy" disabled', dialog)


def test_vm_page_shows_the_preferred_definition_and_the_others(browser, hosts):
    shared = uuid.uuid4()
    _vm(hosts["alpha"], "web-1", state="shut_off", vm_uuid=shared)
    _vm(hosts["beta"], "web-1", state="running", vm_uuid=shared)
    page = browser.get(f"/vms/{shared}/").content.decode()
    host_field = re.search(r'data-field="vm-host">(.*?)</dd>', page, re.S)[1]
    assert ">beta</a>" in host_field
    others = _rows(page, "other-definitions")
    assert len(others) == 1 and "alpha" in others[0] and "Shut off" in others[0]


def test_vm_page_404s(browser, hosts):
    assert browser.get(f"/vms/{uuid.uuid4()}/").status_code == 404
    gone = _vm(hosts["alpha"], "old-1", state="gone")
    assert browser.get(f"/vms/{gone.uuid}/").status_code == 404
    assert browser.get("/vms/not-a-uuid/").status_code == 404


def test_vm_page_resumes_a_running_migration(browser, admin_user, hosts):
    vm = _vm(hosts["alpha"], "web-1")
    migration = _migration(vm, hosts["beta"], admin_user, status="migrating", percent=12.5)
    page = browser.get(f"/vms/{vm.uuid}/").content.decode()
    assert re.search(rf'id="active-migration" data-migration-id="{migration.pk}"', page)
    assert 'data-action="show-progress"' in page
    data = json.loads(re.search(r'id="active-migration-data"[^>]*>(.*?)</script>', page)[1])
    assert data["id"] == migration.pk and data["percent"] == 12.5
    # While it runs, the Migrate action is disabled.
    assert re.search(r'data-action="migrate" disabled', page)


def test_vm_page_for_a_non_staff_user_cannot_migrate(viewer_browser, viewer_user, hosts):
    vm = _vm(hosts["alpha"], "web-1")
    grant(viewer_user, "viewer")
    page = viewer_browser.get(f"/vms/{vm.uuid}/").content.decode()
    assert "migrate-dialog" not in page
    assert "Migrating needs the operator role" in page


# --- migration history ----------------------------------------------------------------


@pytest.fixture
def history(admin_user, viewer_user, hosts):
    web = _vm(hosts["alpha"], "web-1")
    db = _vm(hosts["beta"], "db-1", state="shut_off")
    done = _migration(web, hosts["beta"], admin_user, status="succeeded", percent=100)
    failed = _migration(
        web,
        hosts["gamma"],
        admin_user,
        status="failed",
        error="Pre-checks failed: x",
        failure_reason=FailureReason.PRECHECK,
    )
    offline = _migration(db, hosts["alpha"], viewer_user, status="cancelled", live=False)
    return {"done": done, "failed": failed, "offline": offline}


def _listed(client: Client, query: str = "") -> list[int]:
    page = client.get("/migrations/" + query).content.decode()
    return [int(n) for n in re.findall(r'<tr data-migration="(\d+)">', page)]


def test_migration_list_filters(browser, history):
    done, failed, offline = history["done"], history["failed"], history["offline"]
    assert _listed(browser) == [offline.pk, failed.pk, done.pk]  # newest first
    assert _listed(browser, "?status=failed") == [failed.pk]
    assert _listed(browser, "?status=failed&status=succeeded") == [failed.pk, done.pk]
    assert _listed(browser, "?vm=db-1") == [offline.pk]
    assert _listed(browser, "?host=gamma") == [failed.pk]
    assert _listed(browser, "?source=beta") == [offline.pk]
    assert _listed(browser, "?destination=beta") == [done.pk]
    assert _listed(browser, "?user=viewer") == [offline.pk]
    assert _listed(browser, "?live=false") == [offline.pk]
    tomorrow = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert _listed(browser, f"?created_after={tomorrow}") == []
    assert len(_listed(browser, f"?created_before={tomorrow}")) == 3
    bad = browser.get("/migrations/?created_after=yesterday").content.decode()
    assert 'id="filter-errors"' in bad
    page = browser.get("/migrations/?status=failed").content.decode()
    assert "Pre-checks failed: x" in page
    assert '<div class="small" data-reason="precheck">A pre-check refused' in page
    assert _listed(browser, "?failure_reason=precheck") == [failed.pk]
    assert _listed(browser, "?failure_reason=timeout") == []
    assert '<option value="failed" selected>' in page


def test_migration_list_shows_a_user_only_their_own(viewer_browser, history):
    assert _listed(viewer_browser) == [history["offline"].pk]


def test_migration_list_pages(browser, admin_user, hosts):
    vm = _vm(hosts["alpha"], "web-1")
    for _ in range(52):
        _migration(vm, hosts["beta"], admin_user, status="succeeded")
    first = browser.get("/migrations/?status=succeeded").content.decode()
    assert len(re.findall(r"<tr data-migration=", first)) == 50
    assert "page 1 of 2 (52 migrations)" in first
    assert 'href="?status=succeeded&amp;page=2"' in first
    assert len(_listed(browser, "?status=succeeded&page=2")) == 2


# --- migration detail -----------------------------------------------------------------


@pytest.fixture
def finished_migration(admin_user, hosts):
    vm = _vm(hosts["alpha"], "web-1")
    start = timezone.now() - timedelta(seconds=30)
    migration = _migration(
        vm,
        hosts["beta"],
        admin_user,
        status="succeeded",
        bandwidth_mib_s=30,
        delete_source=True,
        percent=100,
        started_at=start,
        finished_at=start + timedelta(seconds=12),
        total_time_ms=11800,
        downtime_ms=42,
        setup_time_ms=7,
        transferred_bytes=150 * 2**20,
        completed_stats={"downtime": 42, "time_elapsed": 11800, "memory_iteration": 3},
        checks=[{"name": "enough_memory", "status": "pass", "message": "1 GiB free"}],
    )
    actor = Actor(user=admin_user, name="admin", source_ip="127.0.0.1", auth_method="session")
    system = Actor.system("worker w:1")

    def record(event: EventType, who: Actor) -> None:
        audit_event_record(
            actor=who, event_type=event, target=migration, after={"status": event.action}
        )

    record(EventType.MIGRATION_REQUESTED, actor)
    record(EventType.MIGRATION_CHECKING, system)
    record(EventType.MIGRATION_STARTED, system)
    # Samples are taken while it migrates: after "started", before "completing".
    for index, (phase, percent) in enumerate(
        [
            (Phase.SETUP, 0),
            (Phase.TRANSFERRING_MEMORY, 30),
            (Phase.TRANSFERRING_MEMORY, 60),
            (Phase.CONVERGING, 90),
        ]
    ):
        MigrationSample.objects.create(
            migration=migration,
            taken_at=timezone.now(),
            elapsed_ms=1000 * index,
            phase=phase,
            percent=percent,
            data_total_bytes=300 * 2**20,
            data_remaining_bytes=(100 - percent) * 3 * 2**20,
            throughput_bytes_s=30 * 2**20,
        )
    record(EventType.MIGRATION_COMPLETING, system)
    record(EventType.MIGRATION_SUCCEEDED, system)
    return migration


def test_migration_detail_shows_options_timeline_chart_stats_and_audit(browser, finished_migration):
    page = browser.get(f"/migrations/{finished_migration.pk}/").content.decode()
    options = re.search(r'id="migration-options">(.*?)</dl>', page, re.S)[1]
    assert "30 MiB/s" in options and "Delete source when done</dt><dd>yes" in options
    timeline = re.findall(
        r"<strong>([^<]+)</strong>", re.search(r'id="timeline">(.*?)</ol>', page, re.S)[1]
    )
    # Status changes from the audit trail interleaved with the phases the samples show.
    assert timeline == [
        "Requested",
        "Pre-checks running",
        "Migration started",
        "Setting up the migration",
        "Transferring memory",
        "Converging (re-sending dirtied memory)",
        "Completing",
        "Succeeded",
    ]
    figures = re.search(r'id="completed-figures">(.*?)</dl>', page, re.S)[1]
    assert "11800 ms" in figures and "42 ms" in figures and "150.0\xa0MB" in figures
    assert "<th>memory_iteration</th><td>3</td>" in page
    events = re.findall(r'<tr data-event="([\w.]+)">', page)
    assert events == [
        "migration.requested",
        "migration.checking",
        "migration.started",
        "migration.completing",
        "migration.succeeded",
    ]
    assert "session · 127.0.0.1" in page
    assert 'data-check="enough_memory"' in page
    samples = json.loads(re.search(r'id="samples-data"[^>]*>(.*?)</script>', page)[1])
    assert [s["percent"] for s in samples] == [0, 30, 60, 90]
    data = json.loads(re.search(r'id="migration-data"[^>]*>(.*?)</script>', page)[1])
    assert data["status"] == "succeeded" and data["downtime_ms"] == 42
    assert "migration-error" not in page


def test_migration_detail_shows_the_error(browser, history):
    page = browser.get(f"/migrations/{history['failed'].pk}/").content.decode()
    assert re.search(r'id="migration-error">.*Pre-checks failed: x', page, re.S)
    reason = re.search(r'id="failure-reason" data-reason="(\w+)">([^<]+)<', page)
    assert reason.groups() == ("precheck", "A pre-check refused the migration")
    assert "None: the migration did not complete." in page


def test_migration_detail_chart_samples_are_thinned(browser, finished_migration):
    from portal import selectors

    base = timezone.now()
    MigrationSample.objects.bulk_create(
        MigrationSample(
            migration=finished_migration,
            taken_at=base + timedelta(milliseconds=i),
            elapsed_ms=5000 + i,
            phase="converging",
            percent=90,
        )
        for i in range(1500)
    )
    samples = selectors.migration_chart_samples(finished_migration)
    assert len(samples) == selectors.CHART_MAX_POINTS
    assert samples[0]["elapsed_ms"] == 0 and samples[-1]["elapsed_ms"] == 5000 + 1499
    elapsed = [s["elapsed_ms"] for s in samples]
    assert elapsed == sorted(elapsed)


def test_migration_detail_is_only_for_who_may_see_it(viewer_browser, browser, history):
    assert viewer_browser.get(f"/migrations/{history['done'].pk}/").status_code == 404
    assert viewer_browser.get(f"/migrations/{history['offline'].pk}/").status_code == 200
    assert browser.get("/migrations/999999/").status_code == 404
    # A viewer sees the progress, without the buttons to control it.
    page = viewer_browser.get(f"/migrations/{history['offline'].pk}/").content.decode()
    assert "data-progress-view" in page and "Cancel migration" not in page
