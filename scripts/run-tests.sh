#!/usr/bin/env bash
# The whole test suite, run twice: once on the default profile (SQLite + private
# redis-server) and once on the PostgreSQL + shared Redis profile. The test lab
# hosts stay up between the two runs and are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run-tests.sh: the lab hosts need root (unshare, bind mounts, libvirtd). Run as root." >&2
  exit 1
fi

PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
export PORTAL_KEEP_TEST_LAB=1

cleanup() {
  .venv/bin/python -m tests.lab_session down || true
  bash scripts/redis.sh stop || true
}
trap cleanup EXIT

.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== profile 1/2: SQLite + private redis-server =="
bash scripts/redis.sh start
env -u DATABASE_URL -u REDIS_URL .venv/bin/pytest "$@"

echo "== profile 2/2: PostgreSQL ($PG_URL) + Redis ($PG_REDIS_URL) =="
DATABASE_URL=$PG_URL REDIS_URL=$PG_REDIS_URL .venv/bin/pytest "$@"
