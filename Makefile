# One entry point for every task. `make demo` and `make test` work on a fresh machine with
# Python 3.11+ and nothing else installed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test check lint typecheck pytest docs docs-check bench clean test-pgbouncer test-failover bench-tenancy matrix bench-scaleout bench-otel bench-memory

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_DEMO): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[sqlite]"
	touch $@

$(STAMP_DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@ $(STAMP_DEMO)

## demo: run the quickstart on SQLite with the in-process cache (no server needed)
demo: $(STAMP_DEMO)
	$(PY) examples/quickstart.py

## test: every check: lint, format, mypy --strict, the whole test suite with coverage, docs
test: $(STAMP_DEV)
	$(MAKE) --no-print-directory check

# The docs are built before the suite: tests/docs_site opens the built site in Chromium.
check: lint typecheck docs pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

# The second run is the example application's own suite, from its directory as its users
# would run it (on SQLite here; tests/integration/test_plugin.py also runs it on PostgreSQL).
pytest:
	$(VENV)/bin/coverage erase
	UNDERLAY_DOCS_SITE=$(abspath build/site) $(VENV)/bin/coverage run -m pytest $(PYTEST_ARGS)
	cd examples/blog && UNDERLAY_TEST_DATABASE_URL=sqlite+aiosqlite:///blog.db \
		COVERAGE_FILE=$(abspath .coverage) $(abspath $(VENV))/bin/coverage run \
		--rcfile=$(abspath pyproject.toml) -m pytest -q -p no:cacheprovider
	$(VENV)/bin/coverage combine --quiet
	$(VENV)/bin/coverage report

# The PostgreSQL half of the integration suite again, through PgBouncer in transaction mode
# with two worker processes (scripts/scaleout.sh starts PgBouncer; .ci/run runs this).
PGBOUNCER_URL ?= postgresql+asyncpg://postgres@127.0.0.1:6432/postgres?prepared_statement_cache_size=0&statement_cache_size=0
test-pgbouncer: $(STAMP_DEV)
	bash scripts/scaleout.sh start pgbouncer >/dev/null
	UNDERLAY_TEST_DATABASE_URL='$(PGBOUNCER_URL)' $(VENV)/bin/pytest tests/integration \
		-k "postgresql and not sqlite" -m "not no_pgbouncer" -n 2 -q -p no:cacheprovider

## test-failover: Redis masters killed mid-storm, replicas paused (a private set of engines)
test-failover: $(STAMP_DEV)
	$(VENV)/bin/pytest tests/scaleout/test_failover.py --run-slow -q -p no:cacheprovider

# Warnings are errors (-W) and every cross-reference must resolve (-n); -E rebuilds from scratch
# so a warning is never hidden by a cached page.
docs:
	$(VENV)/bin/sphinx-build -b html -W --keep-going -n -E -q docs build/site

## docs-check: build the site and check it in headless Chromium (roles, links, reference, width)
docs-check: docs
	UNDERLAY_DOCS_SITE=$(abspath build/site) $(VENV)/bin/pytest tests/docs_site -q -p no:cacheprovider

## matrix: the suite on other Python / SQLAlchemy pairs, each in its own venv (.ci/matrix says which)
MATRIX_LEGS ?= py3.13-sa2.0
matrix:
	bash .ci/matrix $(MATRIX_LEGS)

BENCH_VENV ?= .venv-bench
STAMP_BENCH := $(BENCH_VENV)/.installed-bench

# A separate environment: advanced-alchemy and the other benchmark-only packages never enter
# the package's dependencies or the development environment.
$(STAMP_BENCH): pyproject.toml benchmarks/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[postgres,sqlite,redis]" -r benchmarks/requirements.txt
	touch $@

## bench: side-by-side benchmarks against PostgreSQL and Redis (BENCH_ARGS="--quick" to smoke-test)
bench: $(STAMP_BENCH)
	$(BENCH_VENV)/bin/python -m benchmarks $(BENCH_ARGS)

## bench-tenancy: the tenant filter's cost on get and list_all (PostgreSQL and SQLite)
bench-tenancy: $(STAMP_DEV)
	$(PY) -m benchmarks.tenancy $(BENCH_ARGS)

## bench-memory: 1,000,000 rows from a generator in and streamed out; RSS growth < 100 MB
bench-memory: $(STAMP_BENCH)
	$(BENCH_VENV)/bin/python -m benchmarks.memory $(BENCH_ARGS)

## bench-otel: what OpenTelemetry instrumentation costs on get, list_all and a commit
bench-otel: $(STAMP_DEV)
	$(PY) -m benchmarks.otel $(BENCH_ARGS)

## bench-scaleout: replica reads, read-your-writes waits (starts the engines it needs)
bench-scaleout: $(STAMP_DEV)
	$(PY) -m benchmarks.scaleout $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache
