#!/usr/bin/env bash
# The portal's web tier (deploy/gunicorn.conf.py): gunicorn with PORTAL_WEB_WORKERS
# uvicorn worker processes on PORTAL_WEB_BIND. Used by `make demo`, the tests, the
# benchmarks and the systemd unit alike. Extra arguments go to gunicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/gunicorn -c deploy/gunicorn.conf.py "$@" portal.asgi:application
