"""The production web tier: gunicorn supervising several uvicorn (ASGI) worker processes.

Each worker serves portal.asgi: websockets through Channels, plain HTTP through Django's
WSGI handler in threads of the worker (a2wsgi; half the CPU per API request of Django's
ASGI handler, docs/performance.md). Every setting comes from the
environment, so `make demo`, the tests, the benchmarks and systemd (deploy/systemd/)
run the same tier:
- PORTAL_WEB_BIND      address:port or unix:/path (default 127.0.0.1:8000)
- PORTAL_WEB_WORKERS   ASGI worker processes (default: one per core, at least 2)
- PORTAL_WEB_TIMEOUT_S a worker silent this long is killed and replaced (default 60)
- PORTAL_WEB_FORWARDED_ALLOW_IPS the reverse proxy's addresses, whose X-Forwarded-For /
  X-Forwarded-Proto are believed (default 127.0.0.1,::1: nginx on the same machine)
- PORTAL_WEB_CONTROL_SOCKET path of gunicorn's control socket (gunicornc); default none
- PORTAL_WEB_HTTP_THREADS threads per worker for reads (default 1)
- PORTAL_WEB_HTTP_WAITING_THREADS threads per worker for changes and downloads, which
                       may wait on a host (default 4); portal/asgi.py
- PORTAL_DB_POOL_SIZE  PostgreSQL connections each worker keeps in its pool (default
                       auto: one per HTTP thread; 0 = none; portal/settings.py); on
                       SQLite, anything but 0 keeps each HTTP thread's connection open
- PORTAL_STALL_WATCH_MS log a worker's event loop standing still this long, with
                       where its threads were (default 0: off; portal/stall_watch.py)
"""

import os

_cores = os.cpu_count() or 1
# Read by portal.settings in each worker (the app is loaded after the fork): "auto" is
# one pooled connection per HTTP thread (portal/asgi.py: reads + requests that may wait),
# counted there from the same settings the thread pools are made from.
os.environ.setdefault("PORTAL_DB_POOL_SIZE", "auto")

bind = [os.environ.get("PORTAL_WEB_BIND", "127.0.0.1:8000")]
# One listening socket per worker (SO_REUSEPORT; gunicorn binds it in each worker after
# the fork): the kernel spreads new connections over the workers. On one shared socket
# whichever worker woke first accepted every waiting connection (all 16 of wrk's on one
# worker, docs/performance.md). A unix socket has one path, so it stays shared.
reuse_port = not bind[0].startswith("unix:")
workers = int(os.environ.get("PORTAL_WEB_WORKERS", str(max(2, _cores))))
worker_class = "portal.web_worker.PortalUvicornWorker"
timeout = int(os.environ.get("PORTAL_WEB_TIMEOUT_S", "60"))
# Websockets and streamed downloads stay open; a graceful restart waits this long.
graceful_timeout = 30
keepalive = 5
# The app is loaded in each worker after the fork: libvirt's event-loop thread and the
# database connections must not be shared between processes.
preload_app = False
# Behind the reverse proxy (deploy/nginx/portal.conf) on the same machine only.
forwarded_allow_ips = os.environ.get("PORTAL_WEB_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("PORTAL_WEB_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("PORTAL_LOG_LEVEL", "info").lower()
proc_name = "portal-web"
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl),
# which the demo, the tests and a second portal of the same user would share (and which
# the systemd unit's read-only file system refuses): off unless a path is given.
control_socket = os.environ.get("PORTAL_WEB_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
