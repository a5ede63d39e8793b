# Berth: `make run` serves it on the embedded default, `make test` passes the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py
STAMP := $(VENV)/.installed
# Berth's state; every command make starts names it, so none has to guess (berth/datadir.py).
export BERTH_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test lint check bench services host messages venv clean-venv

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "berth: $(PYTHON) is needed"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages (Docker engine, registry, busybox, gettext, Chromium); needs root once.
host:
	@./scripts/install-host.sh

# The Docker engine, the local registry and the test images.
services: host
	@./scripts/services.sh

messages: $(STAMP) host
	$(MANAGE) compilemessages --ignore='.venv/*' -v 0

run: $(STAMP) host messages
	@./scripts/start-docker.sh || echo "berth: no Docker engine; Berth starts anyway and says so."
	$(MANAGE) migrate --no-input -v 0
	$(MANAGE) createcachetable
	$(MANAGE) collectstatic --no-input -v 0
	$(MANAGE) recover
	$(MANAGE) createadmin --if-none
	@echo "Berth: http://$${BERTH_LISTEN:-127.0.0.1:8000}/ with its data in $$BERTH_DATA_DIR (Ctrl-C stops the web server, the worker, the stats sampler, the event follower and the sweep)"
	@VENV=$(VENV) ./scripts/run.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

check: $(STAMP) messages
	$(VENV)/bin/ruff check .
	$(MANAGE) makemigrations --check --dry-run
	$(MANAGE) check

# pytest-xdist workers: the suite mostly waits on Docker, so more workers than cores pay.
TEST_WORKERS ?= 4

test: $(STAMP) check
	@./scripts/services.sh || echo "berth: services did not start; Docker tests will skip (or fail under BERTH_REQUIRE_DOCKER=1)."
	$(VENV)/bin/pytest -n $(TEST_WORKERS)

bench: $(STAMP) services messages
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
