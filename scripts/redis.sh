#!/usr/bin/env bash
# The default profile's private redis-server, on a unix socket in the data folder.
# Used only when REDIS_URL is not set. Usage: redis.sh start|stop
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${PORTAL_DATA_DIR:-$PWD/var}
run_dir="$data_dir/run"
# The data folder (when this makes it) and run/ are private: 0700 (portal/datadir.py).
(umask 077 && mkdir -p "$run_dir")
chmod 700 "$run_dir"
socket="$run_dir/redis.sock"
pidfile="$run_dir/redis.pid"

case "${1:-}" in
  start)
    if [ -S "$socket" ] && redis-cli -s "$socket" ping >/dev/null 2>&1; then
      exit 0
    fi
    # In the background of this session, not --daemonize: that calls setsid(), and a
    # session of its own is an autogroup of its own for Linux's scheduler
    # (sched_autogroup); while the web workers kept both cores busy, the kernel left that
    # redis waiting up to 2 s to run, and every progress message with it
    # (docs/performance.md, issue #24).
    nohup redis-server --port 0 --unixsocket "$socket" --unixsocketperm 700 \
      --daemonize no --pidfile "$pidfile" --dir "$run_dir" \
      --save "" --appendonly no --logfile "$run_dir/redis.log" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 50); do
      redis-cli -s "$socket" ping >/dev/null 2>&1 && exit 0
      sleep 0.1
    done
    echo "private redis did not start; see $run_dir/redis.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
