#!/usr/bin/env bash
# Everything the portal needs on a fresh Debian 12 machine: system packages and a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system.sh

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Reinstall only when requirements.txt changed since the last successful install.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
# The command-line client as a console script (pyproject.toml): .venv/bin/portalctl.
if [ ! -x .venv/bin/portalctl ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
fi
# The translations (locale/*/LC_MESSAGES/*.po): compiled to .mo, which git does not keep.
PORTAL_NO_REDIS=1 .venv/bin/python manage.py compilemessages \
  --ignore=.venv --ignore=node_modules --ignore='var*' >/dev/null
# axe-core for the accessibility test (package.json, package-lock.json): node_modules/.
if [ ! -f node_modules/axe-core/axe.min.js ]; then
  npm ci --no-audit --no-fund --silent
fi
echo "python environment ready: .venv"
