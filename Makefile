# Two commands for a newcomer (see README.md): `make demo` and `make test`.
# While changing code: `make test-fast` (no root, no lab, no browser, no Redis).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR := $(or $(PORTAL_DATA_DIR),var)

.PHONY: setup demo test test-fast test-scale-out ui-screenshots lint format lab-up lab-down clean bench-api

setup:  ## system packages (root) + Python virtualenv with the pinned requirements
	bash scripts/setup.sh

demo: setup  ## two lab hosts, a running VM, workers and the portal on http://127.0.0.1:8000
	bash scripts/demo.sh

test: setup  ## the whole test suite, on both settings profiles, against real lab hosts
	bash scripts/run-tests.sh

test-fast:  ## the tests without lab hosts, browser or Redis; any user, under a minute
	bash scripts/test-fast.sh

# The scale-out test alone (issue #12, tests/test_scale_out_lab.py): two web tiers and
# two worker groups on PostgreSQL + Redis against three lab hosts (root), in `make
# test`'s profile 2 setting: TEST_DATABASE_URL, TEST_REDIS_URL, the lab on
# 127.0.0.22-24 in var/pg-profile (TEST_LAB_FIRST_ADDRESS, TEST_LAB_SELF_ADDRESS and
# PORTAL_DATA_DIR override them). The lab is stopped at the end unless
# PORTAL_KEEP_TEST_LAB is set. About 2 minutes once the lab runs.
SCALE_OUT_ENV = DATABASE_URL=$(or $(TEST_DATABASE_URL),postgres://postgres@127.0.0.1:5432/test) \
	REDIS_URL=$(or $(TEST_REDIS_URL),redis://127.0.0.1:6379/0) \
	PORTAL_DATA_DIR=$(or $(PORTAL_DATA_DIR),$(CURDIR)/var/pg-profile) \
	TEST_LAB_FIRST_ADDRESS=$(or $(TEST_LAB_FIRST_ADDRESS),127.0.0.22) \
	TEST_LAB_SELF_ADDRESS=$(or $(TEST_LAB_SELF_ADDRESS),127.0.0.30) \
	TEST_LAB_IMAGE_CACHE=$(or $(TEST_LAB_IMAGE_CACHE),$(CURDIR)/var/guest-images)

test-scale-out: setup  ## 2 web tiers + 2 worker groups, PostgreSQL + Redis, 3 lab hosts
	mkdir -p var/pytest-tmp
	status=0; \
	env $(SCALE_OUT_ENV) PORTAL_KEEP_TEST_LAB=1 $(VENV)/bin/pytest -p no:cacheprovider \
	  --basetemp=$(CURDIR)/var/pytest-tmp/scale-out -rP --durations=5 -m scale_out \
	  tests/test_scale_out_lab.py \
	  || status=$$?; \
	if [ -z "$${PORTAL_KEEP_TEST_LAB:-}" ]; then env $(SCALE_OUT_ENV) $(PY) -m tests.lab_session down; fi; \
	exit $$status

# The REST API over HTTP against the production web tier, 16 clients and 1, beside a
# baseline measured in the same run (docs/performance.md). Seeds its own PostgreSQL
# database `apibench` (dropped and re-created): a few minutes on this 2-core machine.
bench-api: setup
	$(PY) bench/api_bench.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# docs/ui.md's screenshots (docs/ui/en, docs/ui/pt-br), taken by the accessibility
# test in Chromium against the lab (root; ~2 minutes once the lab runs).
ui-screenshots: setup  ## retake docs/ui.md's screenshots of every page, English and Portuguese
	bash scripts/redis.sh start
	PORTAL_UI_SCREENSHOTS=$(CURDIR)/docs/ui TEST_LAB_IMAGE_CACHE=$(CURDIR)/var/guest-images \
	  $(VENV)/bin/pytest -p no:cacheprovider -q \
	  tests/test_browser_a11y.py::test_pages_and_dialog_pass_axe

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
