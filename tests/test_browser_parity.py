"""What the API does, done in Chromium on the production web tier: webhooks managed by an
admin, a batch created by picking VMs, and a host's access set up from its page (ssh
access with a password used once, a peer trust set up and removed), with the API's
errors shown at their fields."""

from __future__ import annotations

import re

import pytest

from hosts.access.models import PeerTrust
from hosts.models import Host
from lab import layout
from migrations_app.models import WebhookEndpoint
from tests import labtools
from tests.test_browser_e2e import ARTIFACTS, _log_in, page, portal  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_webhooks_batch_and_host_access_from_the_pages(portal, page, linux_vm):  # noqa: F811
    from playwright.sync_api import expect

    _log_in(page, portal)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of Delete / Remove

    # Webhooks: a bad URL is named at its field; a good one shows its secret once.
    page.get_by_role("link", name="Webhooks").click()
    page.fill("#webhook-url", "127.0.0.250:9/hook")
    page.click("#webhook-form [type=submit]")
    expect(page.locator("#webhook-url")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#webhook-form [data-error-for=url]")).to_be_visible()
    page.fill("#webhook-url", "http://127.0.0.250:9/hook")
    page.fill("#webhook-description", "chat-ops")
    page.click("#webhook-form [type=submit]")
    expect(page.locator("#webhook-created")).to_be_visible()
    secret = page.locator("#webhook-secret-shown").text_content()
    assert len(secret) >= 20
    endpoint = WebhookEndpoint.objects.get(url="http://127.0.0.250:9/hook")
    assert endpoint.description == "chat-ops" and secret not in endpoint.secret_encrypted
    page.screenshot(path=str(ARTIFACTS / "webhooks.png"), full_page=True)
    page.get_by_role("button", name="Done").click()
    row = page.locator("#webhook-endpoints tr[data-endpoint='http://127.0.0.250:9/hook']")
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert not WebhookEndpoint.objects.exists()

    # A batch from the dashboard: nothing picked is named; one VM picked runs to its end.
    source = linux_vm.source
    destination = linux_vm.other(source)
    page.goto(portal.url + "/")
    page.click("#new-batch")
    page.click("#batch-submit")
    expect(page.locator("#batch-items-error")).to_be_visible()
    vm_row = page.locator(f"#batch-vms tr[data-vm='{layout.LINUX_VM_NAME}']")
    vm_row.locator("[data-pick]").check()
    vm_row.locator("[data-destination]").select_option(destination.name)
    page.fill("#batch-parallel", "1")
    page.screenshot(path=str(ARTIFACTS / "batch-new.png"), full_page=True)
    page.click("#batch-submit")
    page.wait_for_url(re.compile(r".*/migration-batches/\d+/$"))
    expect(page.locator("#batch-status")).to_have_text("Succeeded", timeout=240_000)
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [destination.name]

    # Host access: a wrong password is refused and nothing changes; the right one sets up
    # ssh access (and the host is reached over ssh from now on).
    for lab_host in (source, destination):
        host = Host.objects.get(name=lab_host.name)
        page.goto(f"{portal.url}/hosts/{host.pk}/")
        page.fill("#ssh-user", lab_host.ssh_user)
        page.fill("#ssh-password", "not-" + lab_host.ssh_password)
        page.click("#ssh-access-form [type=submit]")
        refusal = page.locator(
            "#ssh-access-form [data-form-error]:visible, #ssh-access-form .field-error:visible"
        )
        expect(refusal.first).to_be_visible(timeout=60_000)
        assert Host.objects.get(pk=host.pk).ssh_access_set_up_at is None
        page.fill("#ssh-password", lab_host.ssh_password)
        page.click("#ssh-access-form [type=submit]")
        expect(page.locator("[data-field=ssh-access]")).to_contain_text(
            f"as {lab_host.ssh_user}", timeout=60_000
        )
        assert Host.objects.get(pk=host.pk).transport == "ssh"

    # A peer trust set up ahead from the source's page, then removed from both hosts.
    page.goto(f"{portal.url}/hosts/{Host.objects.get(name=source.name).pk}/")
    page.select_option("#peer-trust-destination", label=destination.name)
    page.click("#peer-trust-form [type=submit]")
    trust_row = page.locator(f"#peer-trusts tr[data-trust='{source.name}-{destination.name}']")
    expect(trust_row).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "host-access.png"), full_page=True)
    assert PeerTrust.objects.filter(source__name=source.name).count() == 1
    trust_row.get_by_role("button", name="Remove").click()
    expect(trust_row).to_have_count(0, timeout=60_000)
    assert not PeerTrust.objects.exists()
    assert page.js_errors == []
