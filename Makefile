# Backupsite: `make run` and `make test` set up everything they need on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := libldap2-dev libsasl2-dev slapd ldap-utils default-libmysqlclient-dev pkg-config build-essential \
                sqlite3 gzip zstd tar \
                postgresql-15 postgresql-client-15 mariadb-server mariadb-client procps \
                openssh-server openssl redis-server redis-tools jq faketime age \
                clickhouse-server clickhouse-client \
                chromium chromium-driver prometheus
# Named after the package list, so adding a package re-runs the check on an existing venv.
STAMP_APT := $(VENV)/.apt-done-$(shell echo '$(APT_PACKAGES)' | cksum | cut -d' ' -f1)
STAMP_PIP := $(VENV)/.pip-done
# Azurite (Azure Blob emulator) for the test suite, from the npm registry, under the venv.
AZURITE_VERSION := 3
STAMP_NPM := $(VENV)/.npm-done

.PHONY: setup run test lint typecheck pytest bench soak screenshots clean

setup: $(STAMP_PIP)

$(STAMP_APT):
	@mkdir -p $(VENV)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "Installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing system packages:$$missing (run 'sudo make setup' or install them)"; exit 1; \
	  fi; \
	fi
	@touch $@

$(STAMP_NPM): $(STAMP_APT)
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "npm is missing (install nodejs and npm)"; exit 1; fi; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node azurite@$(AZURITE_VERSION)
	@touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# Web, the Celery worker, the watch's own small worker and one beat in one command (broker: files
# under var/broker); Ctrl-C stops them all.
BIND ?= 127.0.0.1:8000
run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py backupsite_demo
	$(BIN)/python manage.py backupsite_run --bind $(BIND)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy .

pytest: setup $(STAMP_NPM)
	$(BIN)/pytest -q
	BACKUPSITE_TEST_CATALOG=postgresql $(BIN)/pytest -q -m catalog

test: setup $(STAMP_NPM)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest -q --durations=30
	BACKUPSITE_TEST_CATALOG=postgresql $(BIN)/pytest -q -m catalog

bench: setup
	$(BIN)/python bench/run.py $(if $(filter 1,$(QUICK)),--quick)

# The soak (bench/soak.py, issue 18): 200 targets every minute, 2 workers, SIGKILLs and a 10-minute
# storage outage; checks the invariants and writes bench/RESULTS.md's Soak section. ~30 minutes.
# Not part of `make test`.
soak: setup $(STAMP_NPM)
	$(BIN)/python bench/soak.py

# docs/screenshots/*.png of the admin in headless Chromium (tests/browser/screenshots.py): a
# throwaway catalog with demo backups, served on a free loopback port. Not part of `make test`.
screenshots: setup
	$(BIN)/python -m tests.browser.screenshots

clean:
	rm -rf $(VENV) build *.egg-info
