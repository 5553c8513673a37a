"""Outgoing webhooks, against a real HTTP server on 127.0.0.1: the delivery is written
with the final status, signed, retried with back-off by the reconciler, and nothing
outside PORTAL_HOST_NETWORKS is ever contacted."""

import hashlib
import hmac
import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.models import AuditEvent
from audit.services import Actor
from hosts.models import Host
from migrations_app import requests, tasks, webhooks
from migrations_app.models import (
    Migration,
    MigrationBatch,
    MigrationStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from migrations_app.scheduling.batch_turns import batch_advance
from migrations_app.scheduling.schedule import migrations_schedule_run
from migrations_app.worker.reconciler import migrations_reconcile

pytestmark = pytest.mark.django_db

SECRET = "a-shared-secret-of-the-receiver"


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers with the
    next code of `codes` (the last one repeats)."""

    def __init__(self, codes: list[int], location: str = ""):
        self.codes = list(codes)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                code = receiver.codes.pop(0) if len(receiver.codes) > 1 else receiver.codes[0]
                self.send_response(code)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(codes=(200,), location=""):
        receiver = Receiver(list(codes), location)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def hosts(db):
    return (
        Host.objects.create(name="hv-a", address="127.0.0.21"),
        Host.objects.create(name="hv-b", address="127.0.0.22"),
    )


def _queued(hosts, **fields) -> Migration:
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(),
        vm_name="web-1",
        source=hosts[0],
        destination=hosts[1],
        requested_by_name="t",
        max_downtime_ms=500,
        timeout_s=600,
        **fields,
    )


def _endpoint(api, url, events=("migration.cancelled", "migration.failed")) -> dict:
    response = api.post(
        "/api/webhooks/", {"url": url, "events": list(events), "secret": SECRET}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()


def _cancel(migration) -> None:
    requests.migration_cancel(migration=migration, actor=Actor.system("test"))


def test_a_cancelled_migration_is_posted_signed(
    api, hosts, receiver_factory, django_capture_on_commit_callbacks
):
    receiver = receiver_factory()
    created = _endpoint(api, receiver.url)
    assert created["secret"] == SECRET  # shown once, at creation
    assert "secret" not in api.get(f"/api/webhooks/{created['id']}/").json()
    migration = _queued(hosts)
    with django_capture_on_commit_callbacks() as callbacks:
        _cancel(migration)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDeliveryStatus.PENDING
    assert callbacks, "the send is enqueued after commit"

    assert tasks.webhook_deliver(delivery.pk) == WebhookDeliveryStatus.DELIVERED

    (request,) = receiver.requests
    headers, body = request["headers"], request["body"]
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Portal-Signature"], f"sha256={expected}")
    assert headers["X-Portal-Event"] == "migration.cancelled"
    assert headers["X-Portal-Delivery"] == str(delivery.pk)
    payload = json.loads(body)
    assert payload["event"] == "migration.cancelled"
    assert payload["migration"]["id"] == migration.pk
    assert payload["migration"]["status"] == "cancelled"
    assert payload["migration"]["vm_name"] == "web-1"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code) == (1, 200)
    assert delivery.delivered_at is not None
    # Sent once: a second task (a redelivered one) finds nothing due.
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) == "delivered"
    assert len(receiver.requests) == 1


def test_a_change_that_rolls_back_records_no_delivery(api, hosts, receiver_factory):
    receiver = receiver_factory()
    _endpoint(api, receiver.url)
    migration = _queued(hosts)
    with pytest.raises(RuntimeError), transaction.atomic():
        _cancel(migration)
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError("roll back")
    assert WebhookDelivery.objects.count() == 0
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.QUEUED


def test_only_subscribed_active_endpoints_get_deliveries(api, hosts, receiver_factory):
    receiver = receiver_factory()
    subscribed = _endpoint(api, receiver.url, events=["migration.cancelled"])
    _endpoint(api, receiver.url, events=["migration.succeeded"])
    inactive = _endpoint(api, receiver.url, events=["migration.cancelled"])
    WebhookEndpoint.objects.filter(pk=inactive["id"]).update(active=False)
    _cancel(_queued(hosts))
    assert list(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == [subscribed["id"]]


def test_500_then_200_is_retried_by_the_reconciler_after_the_back_off(api, hosts, receiver_factory):
    receiver = receiver_factory(codes=[500, 200])
    _endpoint(api, receiver.url)
    _cancel(_queued(hosts))
    delivery = WebhookDelivery.objects.get()

    before = timezone.now()
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code) == (1, 500)
    assert "HTTP 500" in delivery.last_error
    wait = (delivery.next_attempt_at - before).total_seconds()
    assert 10 <= wait < 12  # the first back-off: 10 s

    # Not due yet: the reconciler leaves it.
    assert webhooks.webhooks_deliver_due() == []
    assert len(receiver.requests) == 1

    # The time came: the reconciler's pass sends it again.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    migrations_reconcile()
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.DELIVERED
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (2, 200, "")
    assert [r["headers"]["X-Portal-Delivery"] for r in receiver.requests] == [str(delivery.pk)] * 2


def test_back_off_grows_and_the_last_attempt_fails_the_delivery(
    api, hosts, receiver_factory, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    assert [webhooks.retry_delay_s(n) for n in (1, 2, 3, 4)] == [10, 30, 90, 270]
    receiver = receiver_factory(codes=[503])
    _endpoint(api, receiver.url)
    _cancel(_queued(hosts))
    delivery = WebhookDelivery.objects.get()
    now = timezone.now()
    waits = []
    for _ in range(3):
        webhooks.webhooks_deliver_due(now=now)
        delivery.refresh_from_db()
        if delivery.next_attempt_at:
            waits.append((delivery.next_attempt_at - now).total_seconds())
            now = delivery.next_attempt_at  # move the time to when it is due
    assert waits == [10, 30]
    assert delivery.status == WebhookDeliveryStatus.FAILED
    assert delivery.attempts == 3
    assert len(receiver.requests) == 3
    webhooks.webhooks_deliver_due(now=now + timedelta(days=1))
    assert len(receiver.requests) == 3  # failed is final


def test_url_outside_the_allow_list_is_refused_at_creation(api, settings):
    settings.HOST_NETWORKS = "127.0.0.0/8"
    for url in ["http://192.0.2.10:8080/hook", "http://hooks.example.org/x"]:
        response = api.post(
            "/api/webhooks/", {"url": url, "events": ["migration.failed"]}, format="json"
        )
        assert response.status_code == 400
        assert "PORTAL_HOST_NETWORKS" in response.json()["url"][0]
    response = api.post(
        "/api/webhooks/",
        {"url": "ftp://127.0.0.1/x", "events": ["migration.failed"]},
        format="json",
    )
    assert response.status_code == 400 and "url" in response.json()
    response = api.post(
        "/api/webhooks/", {"url": "http://127.0.0.1/x", "events": ["vm.gone"]}, format="json"
    )
    assert response.status_code == 400 and "events" in response.json()
    assert not WebhookEndpoint.objects.exists()


def test_allow_list_is_checked_again_before_the_request(api, hosts, receiver_factory, settings):
    receiver = receiver_factory()
    _endpoint(api, receiver.url)
    _cancel(_queued(hosts))
    settings.HOST_NETWORKS = "192.0.2.0/24"  # 127.0.0.1 no longer allowed
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("refused, not contacted")
    assert receiver.requests == []


def test_the_secret_is_stored_encrypted_and_needs_the_secret_key(
    api, hosts, receiver_factory, settings
):
    receiver = receiver_factory()
    created = _endpoint(api, receiver.url)
    stored = WebhookEndpoint.objects.get(pk=created["id"]).secret_encrypted
    assert SECRET not in stored
    assert webhooks.secret_decrypt(stored) == SECRET
    _cancel(_queued(hosts))
    settings.SECRET_KEY = "another-secret-key-than-the-one-that-encrypted-it"
    delivery = WebhookDelivery.objects.get()
    webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert "SECRET_KEY changed" in delivery.last_error
    assert receiver.requests == []


def test_a_finished_batch_is_posted(api, hosts, receiver_factory):
    receiver = receiver_factory()
    _endpoint(api, receiver.url, events=["batch.finished"])
    batch = MigrationBatch.objects.create(created_by_name="t", status="running")
    _queued(hosts, batch=batch, status=MigrationStatus.SUCCEEDED)
    batch_advance(batch=batch)
    delivery = WebhookDelivery.objects.get()
    assert delivery.event == "batch.finished"
    webhooks.webhook_delivery_send(delivery_id=delivery.pk)
    payload = json.loads(receiver.requests[0]["body"])
    assert payload["batch"]["id"] == batch.pk
    assert payload["batch"]["status"] == "succeeded"


def test_endpoints_are_audited_and_for_administrators(api, viewer_api, receiver_factory):
    receiver = receiver_factory()
    created = _endpoint(api, receiver.url)
    assert viewer_api.get("/api/webhooks/").status_code == 403
    assert api.delete(f"/api/webhooks/{created['id']}/").status_code == 204
    assert list(
        AuditEvent.objects.filter(target_type="migrations_app.webhookendpoint")
        .order_by("id")
        .values_list("event_type", flat=True)
    ) == [EventType.WEBHOOK_CREATED, EventType.WEBHOOK_DELETED]


def test_deliveries_are_listed_read_only_in_the_admin(
    api, hosts, receiver_factory, client, admin_user
):
    receiver = receiver_factory()
    _endpoint(api, receiver.url)
    _cancel(_queued(hosts))
    delivery = WebhookDelivery.objects.get()
    client.force_login(admin_user)
    listing = client.get("/admin/migrations_app/webhookdelivery/?status__exact=pending")
    assert listing.status_code == 200
    assert f"/admin/migrations_app/webhookdelivery/{delivery.pk}/" in listing.content.decode()
    assert client.get("/admin/migrations_app/webhookdelivery/add/").status_code == 403
    detail = client.post(
        f"/admin/migrations_app/webhookdelivery/{delivery.pk}/change/", {"status": "delivered"}
    )
    assert detail.status_code == 403
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING
    api_list = api.get("/api/webhook-deliveries/?status=pending").json()
    assert [d["id"] for d in api_list["results"]] == [delivery.pk]


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(api, hosts, receiver_factory):
    elsewhere = receiver_factory()
    redirecting = receiver_factory(codes=[307], location=elsewhere.url)
    _endpoint(api, redirecting.url)
    _cancel(_queued(hosts))
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_delivery_send(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert delivery.last_status_code == 307
    assert len(redirecting.requests) == 1
    assert elsewhere.requests == []


def test_the_engine_and_the_schedule_record_their_final_statuses(api, hosts, receiver_factory):
    from migrations_app.worker.lease import Lease

    receiver = receiver_factory()
    _endpoint(api, receiver.url, events=["migration.succeeded", "migration.failed"])
    running = _queued(hosts, status=MigrationStatus.COMPLETING, claim_epoch=4)
    Lease(running.pk, 4, "w").change(
        running, MigrationStatus.SUCCEEDED, EventType.MIGRATION_SUCCEEDED
    )
    now = timezone.now()
    late = _queued(hosts, not_before=now - timedelta(hours=2), window_end=now - timedelta(hours=1))
    migrations_schedule_run(now=now)
    late.refresh_from_db()
    assert late.status == MigrationStatus.FAILED
    got = {
        d.payload["migration"]["id"]: (d.event, d.payload["migration"]["status"])
        for d in WebhookDelivery.objects.all()
    }
    assert got == {
        running.pk: ("migration.succeeded", "succeeded"),
        late.pk: ("migration.failed", "failed"),
    }
