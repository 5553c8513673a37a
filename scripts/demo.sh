#!/usr/bin/env bash
# `make demo`: two lab hosts with a running VM, the portal and its workers, on
# http://127.0.0.1:8000 until Ctrl-C; then everything started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOSTS=${LAB_HOSTS:-2}
PORT=${PORTAL_PORT:-8000}
# The demo's hosts are the lab's, on loopback: the portal contacts nothing else.
export PORTAL_HOST_NETWORKS=${PORTAL_HOST_NETWORKS:-127.0.0.0/8}
pids=()

stop_all() {
  trap - EXIT INT TERM
  echo
  echo "stopping the portal, workers and lab hosts..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  $PY manage.py lab down || true
  [ -n "${REDIS_URL:-}" ] || bash scripts/redis.sh stop
  echo "stopped."
}
trap stop_all EXIT INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  bash scripts/redis.sh start
fi
$PY manage.py migrate --noinput
$PY manage.py lab up --hosts "$HOSTS"
$PY manage.py register_lab_hosts
$PY manage.py ensure_admin

$PY manage.py run_workers &
pids+=($!)
# The production web tier (deploy/gunicorn.conf.py): several ASGI worker processes.
PORTAL_WEB_BIND="127.0.0.1:$PORT" bash scripts/web.sh &
pids+=($!)

for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
$PY manage.py lab status
cat <<MSG

  The portal is on http://127.0.0.1:$PORT/  (log in with the admin user above)
  API: http://127.0.0.1:$PORT/api/  ·  API docs: http://127.0.0.1:$PORT/api/docs/
  Press Ctrl-C to stop the portal, the workers and the lab hosts.

MSG
wait -n "${pids[@]}"
