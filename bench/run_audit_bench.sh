#!/usr/bin/env bash
# The audit/report benchmark on both databases, each in its own data folder / database.
# First run seeds 100,000 migrations and 500,000 audit events (about a minute each);
# later runs reuse them. Usage: bash bench/run_audit_bench.sh [audit_bench.py options]
# Start again from scratch: rm -rf var-bench-audit; dropdb -h 127.0.0.1 -U postgres bench_audit
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-$PWD/var-bench-audit}
PG_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/bench_audit}

echo "### SQLite ($BENCH_DIR/sqlite)"
mkdir -p "$BENCH_DIR/sqlite"
env -u DATABASE_URL PORTAL_DATA_DIR="$BENCH_DIR/sqlite" .venv/bin/python bench/audit_bench.py "$@"

echo
echo "### PostgreSQL ($PG_URL)"
db=${PG_URL##*/}
createdb -h 127.0.0.1 -U postgres "$db" 2>/dev/null || true
mkdir -p "$BENCH_DIR/pg"
PORTAL_DATA_DIR="$BENCH_DIR/pg" DATABASE_URL="$PG_URL" .venv/bin/python bench/audit_bench.py "$@"
