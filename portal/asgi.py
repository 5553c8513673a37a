"""ASGI entry point: websockets through Channels, HTTP through Django's WSGI handler in
thread pools (a2wsgi: one hop per request, as every view is synchronous). Requests that
may wait (changes, which may contact a host; downloads) have their own pool, so that a
silent host never holds up reads.
"""

import os

from django.core.wsgi import get_wsgi_application

from portal.datadir import data_dir_ensure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
data_dir_ensure()
# Django must be set up before anything imports models (consumers, routing).
django_wsgi_app = get_wsgi_application()

from a2wsgi import WSGIMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from portal.gc_tuning import freeze_long_lived  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402
from portal.stall_watch import stall_watch_start_once  # noqa: E402
from portal.ws_auth import TokenOrSessionAuthMiddleware  # noqa: E402

_reads = WSGIMiddleware(django_wsgi_app, workers=settings.WEB_HTTP_THREADS)
_waiting = WSGIMiddleware(django_wsgi_app, workers=settings.WEB_HTTP_WAITING_THREADS)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Streamed for as long as the report is (migrations_app/api/urls.py).
_DOWNLOADS = ("/export.csv", "/export.json")


def may_wait(scope: dict) -> bool:
    return scope["method"] not in _READ_METHODS or scope["path"].endswith(_DOWNLOADS)


_HEALTHZ_BODY = b'{"status": "ok"}'
_HEALTHZ_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_HEALTHZ_BODY)).encode()),
    (b"x-content-type-options", b"nosniff"),
]


async def _healthz(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _HEALTHZ_HEADERS})
    await send({"type": "http.response.body", "body": _HEALTHZ_BODY})


async def http_application(scope, receive, send) -> None:
    if settings.WEB_STALL_WATCH_MS:
        stall_watch_start_once(settings.WEB_STALL_WATCH_MS)
    if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
        # The liveness probe is answered by the worker's event loop itself (what it
        # proves), not queued behind the requests that hold the HTTP threads. The same
        # answer as portal.views.healthz, which serves it without this tier.
        await _healthz(send)
        return
    await (_waiting if may_wait(scope) else _reads)(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AllowedHostsOriginValidator(
            TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)
freeze_long_lived()
