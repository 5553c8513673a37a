"""ASGI entry point of the web tier: websockets through Channels, plain HTTP through
Django's WSGI handler in a small thread pool of each worker process (a2wsgi).

Why not Django's ASGI handler for HTTP: every view here is synchronous, and under it each
request hops between the event loop and asgiref's executor several times (request
started, the view, request finished); measured on the API that cost 1–2 ms of CPU per
request, up to half of a detail request (docs/performance.md). One hop into a thread
that runs the plain WSGI handler costs ~0.1 ms. Streamed downloads stay streamed
(a2wsgi sends each block as the iterator yields it, with back-pressure).
"""

import os

from django.core.wsgi import get_wsgi_application

from portal.datadir import data_dir_ensure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
data_dir_ensure()
# Django must be set up before anything imports models (consumers, routing).
django_wsgi_app = get_wsgi_application()

from a2wsgi import WSGIMiddleware  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from portal.gc_tuning import freeze_long_lived  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": WSGIMiddleware(django_wsgi_app, workers=settings.WEB_HTTP_THREADS),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
freeze_long_lived()
