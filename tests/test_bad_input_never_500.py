"""Bad path and query values answer 400 or 404, never 500 (issue #12: found by a
property-based OpenAPI run): a malformed UUID in a path, unreadable dates and ids in
filters, on the API and on the pages."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

DASHES = "-" * 36


@pytest.fixture
def page_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize(
    "url",
    [
        f"/api/vms/{DASHES}/",
        f"/api/vms/{DASHES}/destinations/",
        "/api/vms/not-a-uuid/",
        "/api/migrations/abc/",
        "/api/hosts/abc/",
        "/api/migration-batches/abc/",
    ],
)
def test_a_bad_path_value_is_404_or_400(api, url):
    response = api.get(url)
    assert response.status_code in (400, 404), (url, response.status_code)
    assert response.json()  # a JSON error body, as the schema says


@pytest.mark.parametrize(
    "url",
    [
        # vm and host filters take a UUID or a name: text that is neither matches nothing.
        "/api/migrations/?vm=not-a-uuid",
        f"/api/migrations/?vm={DASHES}",
        "/api/migrations/?host=abc",
        "/api/audit/?vm=not-a-uuid",
        f"/api/audit/?vm={DASHES}",
    ],
)
def test_a_name_that_matches_nothing_is_an_empty_list(api, url):
    response = api.get(url)
    assert response.status_code == 200, (url, response.content)
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/migrations/?created_after=yesterday",
        "/api/migrations/?batch=abc",
        "/api/vms/?host=%00",
        "/api/audit/?since=not-a-date",
        "/api/audit/?until=2026-13-45",
        "/api/audit/?source_ip=setup_time",
        "/api/reports/migrations/?since=soon",
        "/api/migrations/?cursor=abc",
    ],
)
def test_a_bad_query_value_is_400_naming_it(api, url):
    response = api.get(url)
    assert response.status_code in (400, 404), (url, response.status_code)
    if response.status_code == 400:
        name = url.split("?", 1)[1].split("=", 1)[0]
        assert name in response.json() or "detail" in response.json(), response.json()


@pytest.mark.parametrize(
    "url",
    [
        "/audit/?since=not-a-date",
        "/audit/?vm=not-a-uuid",
        "/migrations/?vm=not-a-uuid",
        "/migrations/?created_after=never",
        "/reports/migrations/?since=soon",
        f"/vms/{DASHES}/",
    ],
)
def test_a_bad_value_on_a_page_is_not_a_500(page_client, url):
    status = page_client.get(url).status_code
    assert status in (200, 400, 404), (url, status)


TOO_BIG = "99999999999999999999"  # over 2**63: SQLite's driver raised OverflowError (a 500)
_HUGE_CURSOR = base64.urlsafe_b64encode(f"2026-01-01T00:00:00+00:00|{TOO_BIG}".encode()).decode()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/migrations/?batch=1.3e22", "batch"),
        (f"/api/migrations/?batch={TOO_BIG}", "batch"),
        ("/api/migrations/?batch=-1", "batch"),
        (f"/api/audit/?cursor={_HUGE_CURSOR}", "cursor"),
    ],
)
def test_an_out_of_range_number_in_a_query_is_400_naming_it(api, url, name):
    response = api.get(url)
    assert response.status_code == 400, (url, response.status_code)
    assert name in response.json(), response.json()


@pytest.mark.parametrize(
    "url",
    [
        f"/api/vms/?host={TOO_BIG}",  # a host name or id: a number no id can be is a name
        f"/api/peer-trusts/?source={TOO_BIG}",
        f"/api/webhook-deliveries/?endpoint={TOO_BIG}",
        f"/api/migrations/?page={TOO_BIG}",
        f"/migrations/?batch={TOO_BIG}",
        f"/vms/?host={TOO_BIG}",
    ],
)
def test_a_huge_id_elsewhere_is_not_a_500(page_client, api, url):
    client = api if url.startswith("/api/") else page_client
    response = client.get(url)
    assert response.status_code in (200, 400, 404), (url, response.status_code)
    if url.startswith("/api/vms/") and response.status_code == 200:
        assert response.json()["results"] == []


def test_a_huge_destination_id_in_a_batch_is_a_400_naming_it(api, vm):
    response = api.post(
        "/api/migration-batches/",
        {"items": [{"vm": str(vm.uuid), "destination": TOO_BIG}]},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert "destination" in str(response.json()), response.json()
