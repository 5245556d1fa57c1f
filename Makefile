# Two commands for a fresh machine with Python 3.11+:
#   make run    install, start the database, migrate, seed, serve on :8080
#   make test   the whole test suite against real PostgreSQL
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := ecommerce.wsgi

.PHONY: install run serve migrate seed test test-fast lint format bench profile drill stop-db lock clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,dev,bench]'
	touch $@

migrate: install
	$(BIN)/flask db upgrade

seed: install
	$(BIN)/flask seed

run: migrate seed serve

serve: install
	$(BIN)/gunicorn -c python:ecommerce.gunicorn_conf ecommerce.wsgi:app

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The developer's loop (docs/DEVELOPING.md).
test-fast: install
	$(BIN)/python -m pytest -m "not slow" tests/unit tests/integration tests/api $(PYTEST_ARGS)

# ruff, then the layering contract (setup.cfg [importlinter]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The 12.12 simulator's sale-night suite: one hot item, 64 connections, pays
# combined and alone, with Idempotency-Keys, the full flow, a sold-out storm and
# the naive negative control, against one pgbench ceiling; prints the table and
# writes a JSON report and a chart under instance/flashsale/. Then the crowd
# (ecommerce/crowd/): 8,000 buyers within 2 s for 500 units, with the waiting
# room and without, straight to gunicorn and through HAProxy (instance/crowd/).
# With Go installed (apt-get install golang-go golang-github-gorilla-mux-dev
# golang-github-jackc-pgx-v4-dev), the design note's own Go service, built from
# GO_SEED, is sold through in the same sitting and the shop's rows are given as
# ratios to it; without it those rows say why they were skipped. Last, pay only
# and the flow again, the shop's and Go's, with the database one network hop
# (600 us a round trip) away, through a relay built with the C compiler.
GO_SEED ?= ../shared/peers/go-seed
BENCH_ARGS ?= --suite --duration 10 --go-seed $(GO_SEED) --db-hop-us 600
CROWD_ARGS ?= --suite
bench: install
	$(BIN)/flask flashsale $(BENCH_ARGS)
	$(BIN)/flask crowd $(CROWD_ARGS)

# A flame graph of one gunicorn worker under the whole buyer's flow (py-spy):
# PROFILE_OUT (.txt: collapsed stacks). PROFILE_ARGS=--mode pay: the pays alone.
PROFILE_ARGS ?= --mode flow
PROFILE_OUT ?= instance/flashsale/profile.svg
profile: install
	$(BIN)/flask flashsale $(PROFILE_ARGS) --stock 200000 --buyers 200000 --duration 10 \
		--no-ceiling --cpu --profile $(PROFILE_OUT)

# The sale-night fault drill (docs/OPERATIONS.md): pg_auto_failover (a monitor,
# a primary and its synchronous standby, PgBouncer beside each), three
# instances behind HAProxy, a storm of well-behaved clients, and each fault
# injected while it runs; prints what each fault cost and writes a report and a
# chart under instance/drill/. Needs Debian's postgresql-15-auto-failover,
# pg-auto-failover-cli, pgbouncer and haproxy. DRILL_ARGS=--short: CI's version.
DRILL_ARGS ?=
drill: install
	$(BIN)/flask drill $(DRILL_ARGS)

stop-db: install
	$(BIN)/flask embedded-db stop

# Re-resolve and pin every dependency (after changing setup.cfg).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test,dev,bench]'
	(echo "# Exact versions of every package, direct and transitive (make install uses it as -c)."; \
	 echo "# Regenerate: make lock"; \
	 .lock-venv/bin/pip freeze --exclude-editable) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
