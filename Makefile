# Two commands for a newcomer (see README.md): `make demo` and `make test`.
# While changing code: `make test-fast` (no root, no lab, no browser, no Redis).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR := $(or $(PORTAL_DATA_DIR),var)

.PHONY: setup demo test test-fast lint format lab-up lab-down clean

setup:  ## system packages (root) + Python virtualenv with the pinned requirements
	bash scripts/setup.sh

demo: setup  ## two lab hosts, a running VM, workers and the portal on http://127.0.0.1:8000
	bash scripts/demo.sh

test: setup  ## the whole test suite, on both settings profiles, against real lab hosts
	bash scripts/run-tests.sh

test-fast:  ## the tests without lab hosts, browser or Redis; any user, under a minute
	bash scripts/test-fast.sh

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lab-up: setup
	$(PY) manage.py lab up --hosts 2

lab-down:
	$(PY) manage.py lab down

# Stops the test lab first (its bind mounts must be gone before anything is deleted;
# `down` fails loudly if one survives), then removes its state, the test database and
# the caches. The demo's data (database, keys, lab, guest images) stays.
clean:
	if [ -d "$(DATA_DIR)/test-lab" ]; then $(PY) -m tests.lab_session down; fi
	rm -rf "$(DATA_DIR)/test-lab" "$(DATA_DIR)/test-lab-tls" "$(DATA_DIR)"/test-portal.sqlite3* test-artifacts .pytest_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
