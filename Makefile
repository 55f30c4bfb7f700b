# Two commands for a fresh machine with Python 3.11+ and make: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test browser install lint contracts typecheck bench bench-validation bench-scoring clean stop-embedded

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Server (HTTP + websockets), Celery worker, scheduler and projectors, with a demo store.
run: $(STAMP)
	$(PY) -m config.devrun

# The whole test suite against real PostgreSQL and Redis (embedded unless the URLs are set).
test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Headless Chromium and its driver (Debian packages) for the browser tests in tests/e2e/.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y --no-install-recommends chromium chromium-driver; \
	  else \
	    echo "The browser tests need Chromium: run 'sudo apt-get install chromium chromium-driver'" \
	      "(as root, 'make test' installs them itself)." >&2; \
	    exit 1; \
	  fi; \
	fi

lint: $(STAMP) contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The import contracts in .importlinter: the apps' layers, the edges, no cycles inside a package.
contracts: $(STAMP)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

bench: $(STAMP)
	$(PY) bench/ingest.py

bench-validation: $(STAMP)
	$(PY) bench/validation.py

bench-scoring: $(STAMP)
	$(PY) bench/scoring_quality.py
	$(PY) bench/scoring_events.py

stop-embedded: $(STAMP)
	$(PY) -m config.embedded stop

clean:
	rm -rf $(VENV) var
