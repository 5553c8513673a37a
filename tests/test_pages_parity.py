"""The pages that do what the API does (Django's test client; no lab, no browser): who
sees which form, and that each form posts to the endpoint that does the work. The
browser runs them in tests/test_browser_parity.py."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from hosts.access.models import PeerTrust
from hosts.models import Host
from vms.models import VM

pytestmark = pytest.mark.django_db


def _client_in(group: str | None, *, staff: bool = False) -> Client:
    user = get_user_model().objects.create_user(
        username=f"u-{uuid.uuid4().hex[:8]}", password="pw-123456", is_staff=staff
    )
    if group:
        user.groups.add(Group.objects.get(name=group))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def hosts() -> tuple[Host, Host]:
    alpha = Host.objects.create(name="alpha", address="192.0.2.10", status="reachable")
    beta = Host.objects.create(name="beta", address="192.0.2.11", status="reachable")
    VM.objects.create(
        uuid=uuid.uuid4(), name="web", host=alpha, state="running", persistent=True, vcpus=1,
        memory_kib=2**20, max_memory_kib=2**20, last_synced_at=timezone.now(),
    )  # fmt: skip
    return alpha, beta


def test_host_admins_get_the_access_forms_others_only_the_facts(hosts):
    alpha, beta = hosts
    alpha.ssh_host_key_pending_fingerprint = "SHA256:newkey"
    alpha.save()
    page = _client_in("host admin").get(f"/hosts/{alpha.pk}/").content.decode()
    for form in (
        f'data-url="/api/hosts/{alpha.pk}/ssh-access/"',
        f'data-url="/api/hosts/{alpha.pk}/accept-host-key/"',
        f'data-url="/api/hosts/{alpha.pk}/tls/"',
        'data-url="/api/peer-trusts/"',
        f'data-url="/api/hosts/{alpha.pk}/retire/"',
    ):
        assert form in page, form
    assert f'<option value="{beta.pk}">beta</option>' in page
    viewer = _client_in("operator").get(f"/hosts/{alpha.pk}/").content.decode()
    assert 'id="access"' in viewer and "SHA256:newkey" in viewer
    assert "ssh-access/" not in viewer and "/api/peer-trusts/" not in viewer


def test_peer_trusts_of_the_host_are_listed_with_remove(hosts):
    alpha, beta = hosts
    trust = PeerTrust.objects.create(
        source=alpha, destination=beta, source_key="ssh-ed25519 AAAA x", source_key_fingerprint="f",
        destination_user="root", destination_host_key_fingerprint="g", authorized_keys_line="l",
        known_hosts_line="k", verified_at=timezone.now(),
    )  # fmt: skip
    for host in (alpha, beta):
        page = _client_in("host admin").get(f"/hosts/{host.pk}/").content.decode()
        assert 'data-trust="alpha-beta"' in page
        assert f'data-url="/api/peer-trusts/{trust.pk}/"' in page


def test_the_dashboard_adds_hosts_for_host_admins_only(hosts):
    page = _client_in("host admin").get("/").content.decode()
    assert 'id="add-host-form"' in page and 'data-url="/api/hosts/"' in page
    assert 'id="add-host-form"' not in _client_in("operator").get("/").content.decode()


def test_new_batch_page_for_operators_lists_running_vms(hosts):
    operator = _client_in("operator")
    assert 'id="new-batch"' in operator.get("/").content.decode()
    page = operator.get("/migration-batches/new/").content.decode()
    assert 'data-vm="web"' in page
    assert '<option value="beta">beta</option>' in page  # not alpha: it runs there
    assert _client_in("viewer").get("/migration-batches/new/").status_code == 403
    assert 'id="new-batch"' not in _client_in("viewer").get("/").content.decode()


def test_webhooks_page_is_for_staff(hosts):
    page = _client_in(None, staff=True).get("/webhooks/")
    assert page.status_code == 200
    assert 'data-url="/api/webhooks/"' in page.content.decode()
    assert _client_in("host admin").get("/webhooks/").status_code == 403


def test_browser_errors_name_page_actions_not_api_calls(api, hosts):
    alpha, _beta = hosts
    answer = api.post(f"/api/hosts/{alpha.pk}/tls/", {}, format="json").json()
    (message,) = answer["non_field_errors"]
    assert '"Set up ssh access" on the host page of alpha' in message
    assert "/api/" not in message
