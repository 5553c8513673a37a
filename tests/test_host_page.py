"""The host page (Django's test client; no lab, no browser)."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from hosts.models import Host
from tests.grants import grant
from vms.models import VM

pytestmark = pytest.mark.django_db


@pytest.fixture
def host() -> Host:
    host = Host.objects.create(
        name="alpha",
        address="192.0.2.10",
        status="reachable",
        arch="x86_64",
        memory_total_bytes=8 * 2**30,
        memory_free_bytes=3 * 2**30,
    )
    for name, state in (("web", "running"), ("db", "running"), ("old", "shut_off")):
        VM.objects.create(
            uuid=uuid.uuid4(),
            name=name,
            host=host,
            state=state,
            persistent=True,
            vcpus=1,
            memory_kib=512 * 1024,
            max_memory_kib=512 * 1024,
            last_synced_at=timezone.now(),
        )
    return host


def test_host_page_shows_facts_vms_and_actions(browser, host):
    page = browser.get(f"/hosts/{host.pk}/").content.decode()
    assert "3.0\xa0GB / 8.0\xa0GB" in page or "3.0 GB / 8.0 GB" in page
    assert re.search(r'data-field="running-vms">2<', page)
    vms = re.findall(r'<tr data-vm="(\w+)">', page)
    assert vms == ["db", "web", "old"]  # running first, then by name
    assert 'id="maintenance-form"' in page and "Enter maintenance" in page
    assert 'data-action="evacuate"' in page and 'id="evacuate-dialog"' in page
    assert "Not in maintenance" in page


def test_host_page_in_maintenance_offers_leaving(browser, host):
    host.maintenance = True
    host.maintenance_reason = "firmware <update>"
    host.maintenance_since = timezone.now()
    host.save()
    page = browser.get(f"/hosts/{host.pk}/").content.decode()
    assert "Leave maintenance" in page and "Enter maintenance" not in page
    assert "firmware &lt;update&gt;" in page  # escaped
    assert 'data-field="maintenance-badge"' in page
    dashboard = browser.get("/").content.decode()
    row = re.search(r'<tr data-host="alpha">.*?</tr>', dashboard, re.S)[0]
    assert 'data-field="maintenance"' in row


def test_viewer_sees_the_host_but_no_actions(viewer_browser, viewer_user, host):
    assert viewer_browser.get(f"/hosts/{host.pk}/").status_code == 404  # no role yet
    grant(viewer_user, "viewer")
    page = viewer_browser.get(f"/hosts/{host.pk}/").content.decode()
    assert 'id="host-vms"' in page
    assert 'id="maintenance-form"' not in page and 'data-action="evacuate"' not in page


def test_dashboard_links_host_rows_to_the_host_page(browser, host):
    dashboard = browser.get("/").content.decode()
    row = re.search(r'<tr data-host="alpha">.*?</tr>', dashboard, re.S)[0]
    assert f'href="/hosts/{host.pk}/" data-field="host-link"' in row
    assert 'href="?host=alpha"' in row  # the VM filter stays


def test_unknown_host_is_404_and_login_needed(browser, host):
    assert browser.get("/hosts/999999/").status_code == 404
    assert Client().get(f"/hosts/{host.pk}/").status_code == 302
