#!/usr/bin/env bash
# `make test-fast`: the tests that need no root, no lab hosts, no browser and no Redis,
# and not the deep property-based run of the API (pytest -m "not lab and not browser and
# not redis and not ldap and not fuzz"), on SQLite with the in-memory channel layer and
# the task queue in the database, in a throw-away data folder.
# Runs as any user who can read the checkout (the venv must exist: `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/portal-test-fast.XXXXXX")
trap 'rm -rf "$data_dir"' EXIT

env -u DATABASE_URL -u REDIS_URL -u PORTAL_SECRET_KEY -u PORTAL_PROFILE \
  PORTAL_DATA_DIR="$data_dir" PORTAL_NO_REDIS=1 \
  .venv/bin/pytest -m "not lab and not browser and not redis and not ldap and not fuzz" -p no:cacheprovider -q "$@"
