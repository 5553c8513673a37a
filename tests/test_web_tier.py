"""The web tier's HTTP routing (portal/asgi.py): reads in their own thread pool, the
requests that may wait on a host in another, so that a host that does not answer
holds up no read of the same worker process."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from hosts.models import Host
from portal import asgi
from portal.asgi import may_wait
from tests.processes import PortalServer, free_port


@pytest.mark.parametrize(
    ("method", "path", "waits"),
    [
        ("GET", "/api/hosts/", False),
        ("HEAD", "/api/vms/", False),
        ("OPTIONS", "/api/migrations/", False),
        ("GET", "/", False),
        ("POST", "/api/hosts/3/refresh/", True),
        ("POST", "/api/vms/0b3e/migrate/check/", True),
        ("PATCH", "/api/hosts/3/", True),
        ("DELETE", "/api/hosts/3/", True),
        ("POST", "/login/", True),
        ("GET", "/api/reports/migrations/export.csv", True),
        ("GET", "/api/reports/migrations/export.json", True),
        ("GET", "/api/reports/migrations/", False),
    ],
)
def test_which_requests_may_wait(method, path, waits):
    assert may_wait({"method": method, "path": path}) is waits


def _request(url: str, token: str, method: str = "GET") -> tuple[int, float]:
    started = time.monotonic()
    request = urllib.request.Request(
        url,
        method=method,
        headers={"Authorization": f"Token {token}"},
        data=b"" if method == "POST" else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.monotonic() - started


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_healthz_is_answered_by_the_event_loop_as_the_view_answers(client, monkeypatch, method):
    """The liveness probe never waits for (or reaches) the HTTP thread pools."""
    import asyncio
    import json

    async def pools(scope, receive, send):
        raise AssertionError("/healthz went to a thread pool")

    monkeypatch.setattr(asgi, "_reads", pools)
    monkeypatch.setattr(asgi, "_waiting", pools)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/healthz", "method": method, "headers": []}
    asyncio.run(asgi.http_application(scope, receive, send))
    start, body = sent
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-type"] == b"application/json"
    assert json.loads(body["body"]) == client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_host_that_does_not_answer_holds_up_no_read(tmp_path):
    """One web worker; a host whose libvirt port accepts connections and never answers
    (a listening socket nobody reads). Its refresh waits for the connect timeout; reads
    through the same worker are answered meanwhile."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshakes; nothing ever answers
    user = get_user_model().objects.create_superuser("web-admin", password=None)
    token = Token.objects.create(user=user).key
    host = Host.objects.create(
        name="silent", address="127.0.0.1", transport="tcp", port=silent.getsockname()[1]
    )
    server = PortalServer(tmp_path / "web.log", free_port(), web_workers=1)
    server.start()
    try:
        server.wait_until_serving()
        assert _request(f"{server.url}/api/hosts/", token)[0] == 200
        refresh: dict[str, tuple[int, float]] = {}
        waiting = threading.Thread(
            target=lambda: refresh.update(
                result=_request(f"{server.url}/api/hosts/{host.pk}/refresh/", token, "POST")
            )
        )
        waiting.start()
        time.sleep(1.0)  # the refresh is now waiting on the silent host
        assert waiting.is_alive(), refresh
        reads = [_request(f"{server.url}/api/hosts/", token) for _ in range(5)]
        assert waiting.is_alive(), "the refresh should still wait for the host"
        assert all(status == 200 for status, _ in reads), reads
        assert max(elapsed for _, elapsed in reads) < 2.0, reads
        waiting.join(120)
        status, elapsed = refresh["result"]
        assert status == 200 and elapsed > 2.0, refresh
        host.refresh_from_db()
        assert host.status == "unreachable"
    finally:
        server.stop()
        silent.close()
