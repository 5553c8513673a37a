#!/usr/bin/env bash
# manage.py as the portal's user with the production environment file, as the systemd
# units run the portal (docs/deploy.md). Run as root:
#   scripts/portal-manage.sh migrate
#   scripts/portal-manage.sh check --deploy
# PORTAL_ENV_FILE (default /etc/portal/portal.env), PORTAL_USER (default portal).
# The file is read by bash here and by systemd in the units: keep its values free of
# spaces, quotes and $ (generated keys and passwords from token_urlsafe are).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${PORTAL_ENV_FILE:-/etc/portal/portal.env}
user=${PORTAL_USER:-portal}
if [ "$(id -u)" -ne 0 ]; then
  echo "portal-manage.sh: run as root (it switches to the user $user)" >&2
  exit 1
fi
if [ ! -r "$env_file" ]; then
  echo "portal-manage.sh: $env_file not found (docs/deploy.md, step 5)" >&2
  exit 1
fi
home=$(getent passwd "$user" | cut -d: -f6)
# A clean environment: only what the units would have, plus the file's variables.
exec runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" LANG=C.UTF-8 \
  bash -c 'set -a; . "$1"; set +a; shift; exec .venv/bin/python manage.py "$@"' \
  portal-manage "$env_file" "$@"
