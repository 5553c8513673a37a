#!/usr/bin/env bash
# The whole test suite on both settings profiles, side by side: the default profile
# (SQLite + private redis-server) and the PostgreSQL + shared Redis profile. Each has
# its own lab hosts (127.0.0.12-14 and 127.0.0.22-24) and data folder; the guest
# images are built once and shared. The labs are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run-tests.sh: the lab hosts need root (unshare, bind mounts, libvirtd). Run as root." >&2
  exit 1
fi

PG_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
ROOT=$PWD
PG_DATA_DIR=$ROOT/var/pg-profile
LOGS=$ROOT/var/test-logs
export PORTAL_KEEP_TEST_LAB=1
export TEST_LAB_IMAGE_CACHE=$ROOT/var/guest-images
mkdir -p "$PG_DATA_DIR" "$LOGS" "$ROOT/var/pytest-tmp"

pg_profile() {
  env DATABASE_URL="$PG_URL" REDIS_URL="$PG_REDIS_URL" PORTAL_DATA_DIR="$PG_DATA_DIR" \
    TEST_LAB_FIRST_ADDRESS=127.0.0.22 TEST_LAB_SELF_ADDRESS=127.0.0.30 "$@"
}

cleanup() {
  .venv/bin/python -m tests.lab_session down || true
  pg_profile .venv/bin/python -m tests.lab_session down || true
  bash scripts/redis.sh stop || true
}
trap cleanup EXIT

.venv/bin/ruff check .
.venv/bin/ruff format --check .

# The first lab builds the guest images (kernel + initramfs) that both labs share.
.venv/bin/python -m tests.lab_session up >/dev/null
bash scripts/redis.sh start

# Tests of what the lab hosts, libvirt and QEMU do (the lab itself, options on the wire,
# ssh, peer trust, TLS), and browser runs of pages whose reads and writes the test client
# covers in both profiles (accessibility, the pages that mirror the API, the command-line
# client) use the database only as any test does: each runs once, in one of the two
# profiles (split to even out their times). The scale-out test (two web and
# two worker groups on one database) needs PostgreSQL: it runs in the second. Every
# other test runs in both.
HOST_BEHAVIOUR_TESTS_FIRST=(
  tests/test_lab.py tests/test_lab_isolation.py tests/test_lab_faults.py
  tests/test_extra_vms_lab.py tests/test_ssh_lab.py tests/test_tls_lab.py
  tests/test_browser_a11y.py tests/test_cpu_baseline_lab.py tests/test_postcopy_recovery_lab.py
  tests/test_browser_tune.py
)
HOST_BEHAVIOUR_TESTS_SECOND=(
  tests/test_options_lab.py tests/test_peer_trust_lab.py tests/test_outside_actions_lab.py
  tests/test_outside_matrix_lab.py tests/test_convergence_lab.py tests/test_browser_convergence.py
  tests/test_browser_parity.py tests/test_portalctl_lab.py tests/test_convergence_forecast_lab.py
)
first_profile_skips=()
for file in "${HOST_BEHAVIOUR_TESTS_SECOND[@]}"; do first_profile_skips+=(--ignore="$file"); done
second_profile_skips=()
for file in "${HOST_BEHAVIOUR_TESTS_FIRST[@]}"; do second_profile_skips+=(--ignore="$file"); done

started=$(date +%s)
echo "== both profiles start: 1/2 SQLite + private redis-server, 2/2 PostgreSQL ($PG_URL) + Redis ($PG_REDIS_URL) =="
# A temporary folder each: pytest prunes old numbered folders under the shared default
# one, which would remove the other profile's while it still uses them.
env -u DATABASE_URL -u REDIS_URL .venv/bin/pytest --basetemp="$ROOT/var/pytest-tmp/profile-1" \
  --durations=25 -m "not scale_out" "${first_profile_skips[@]}" "$@" >"$LOGS/profile-1.log" 2>&1 &
first=$!
pg_profile .venv/bin/pytest --basetemp="$ROOT/var/pytest-tmp/profile-2" \
  --durations=25 "${second_profile_skips[@]}" "$@" >"$LOGS/profile-2.log" 2>&1 &
second=$!
status_1=0
status_2=0
wait "$first" || status_1=$?
took_1=$(($(date +%s) - started))
wait "$second" || status_2=$?
took_2=$(($(date +%s) - started))
echo "== both profiles: exit $status_1 ($took_1 s) and $status_2 ($took_2 s) =="
echo "== profile 1/2: SQLite + private redis-server (exit $status_1, $took_1 s) =="
cat "$LOGS/profile-1.log"
echo "== profile 2/2: PostgreSQL + Redis (exit $status_2, $took_2 s) =="
cat "$LOGS/profile-2.log"
[ "$status_1" -eq 0 ] && [ "$status_2" -eq 0 ]
