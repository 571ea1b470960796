# Snapflow developer entry points. Every target sets up what it needs first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test test-fast lint format bench bench-freeze regenerate-golden clean

# The venv is rebuilt only when pyproject.toml changes, so `make setup` is quick once done.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (Snapflow needs Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# Debian packages used by the tests and the demo (databases, btrfs, restic, a headless browser).
# Needs root; a no-op when everything is already installed.
system-deps:
	@bash scripts/system-deps.sh

demo: setup
	$(PY) -m workflows.demo

test: setup system-deps
	$(PY) -m pytest -q

# The fast set: no S3 server, fake API server, database, etcd, browser, pip install or loop device
# (tests/conftest.py marks those slow). Needs no Debian packages.
test-fast: setup
	$(PY) -m pytest -q -m 'not slow and not on_cluster'

# Also the exporter's alerting rules, as promtool reads them (Debian's prometheus package: system-deps).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@command -v promtool >/dev/null 2>&1 || { echo "error: promtool not found (make system-deps installs it)"; exit 1; }
	@rules=$$(mktemp --suffix=.rules.yaml) && trap 'rm -f "$$rules"' EXIT && \
	  $(VENV)/bin/snapflow exporter --rules > "$$rules" && promtool check rules "$$rules"

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup system-deps
	$(PY) bench/backup_vs_restic.py
	$(PY) bench/block_cbt.py
	$(PY) bench/bucket_vs_rclone.py
	$(PY) bench/etcd_snapshot.py
	$(PY) bench/registry_dedup.py
	$(PY) bench/fleet_report.py
	$(PY) bench/anomaly_rates.py

bench-freeze: setup system-deps
	$(PY) bench/freeze_window.py

regenerate-golden: setup
	REGENERATE=1 $(PY) -m pytest -q tests/golden

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
