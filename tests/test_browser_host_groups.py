"""An operator of one host group in a real browser (Debian's headless Chromium through
Playwright, against the production web tier and the workers on the test database):
the dashboard, the host and VM pages and the migrate dialog show only that group; the
other group's host and VM pages are not there (404). No hypervisor is needed: the hosts
are rows the portal has not contacted yet. Screenshots go to test-artifacts/."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from hosts.models import Host, HostGroup
from tests.grants import grant
from tests.test_browser_e2e import ARTIFACTS, page, portal  # noqa: F401 (fixtures)
from vms.models import VM

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

PASSWORD = "team-a-pass-123"


def _vm(host: Host, name: str) -> VM:
    return VM.objects.create(
        uuid=uuid.uuid4(),
        name=name,
        host=host,
        state="running",
        persistent=True,
        vcpus=1,
        memory_kib=262144,
        max_memory_kib=262144,
        last_synced_at=timezone.now(),
    )


def test_an_operator_of_one_group_sees_only_that_group(portal, page):  # noqa: F811
    from playwright.sync_api import expect

    team_a = HostGroup.objects.create(name="team-a")
    team_b = HostGroup.objects.create(name="team-b")
    a1 = Host.objects.create(name="a1", address="127.0.0.81", group=team_a)
    Host.objects.create(name="a2", address="127.0.0.82", group=team_a)
    b1 = Host.objects.create(name="b1", address="127.0.0.83", group=team_b)
    web_a = _vm(a1, "web-a")
    web_b = _vm(b1, "web-b")
    user = get_user_model().objects.create_user(username="team-a-op", password=PASSWORD)
    grant(user, "operator", "team-a")

    page.goto(portal.url + "/")
    page.fill("#id_username", "team-a-op")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(portal.url + "/")

    hosts = page.locator("#hosts tbody tr[data-host]")
    expect(hosts).to_have_count(2)
    expect(page.locator("#hosts tr[data-host='a1'] [data-field=host-group]")).to_have_text("team-a")
    expect(page.locator("#hosts tr[data-host='b1']")).to_have_count(0)
    body = page.locator("body")
    expect(body).to_contain_text("web-a")
    expect(body).not_to_contain_text("web-b")
    page.screenshot(path=str(ARTIFACTS / "host-group-operator-dashboard.png"), full_page=True)

    # The other group's pages are not there for this user.
    for path in (f"/hosts/{b1.pk}/", f"/vms/{web_b.uuid}/"):
        response = page.goto(portal.url + path)
        assert response.status == 404, path

    # The group's VM: its page names the group, and the migrate dialog offers only a2.
    page.goto(f"{portal.url}/vms/{web_a.uuid}/")
    expect(page.locator("[data-field=vm-host-group]")).to_have_text("team-a")
    page.click("#vm-actions summary")
    page.get_by_role("button", name="Migrate…").click()
    chips = page.locator("#mig-host-choices [data-host]")
    expect(chips).to_have_count(1)
    expect(chips.first).to_have_attribute("data-host", "a2")
    page.screenshot(path=str(ARTIFACTS / "host-group-operator-migrate.png"))

    # The API agrees with the pages, with the browser's own session.
    listed = page.evaluate("fetch('/api/hosts/').then(r => r.json())")
    assert sorted(row["name"] for row in listed["results"]) == ["a1", "a2"]
    assert page.js_errors == []
