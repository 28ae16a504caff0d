# The two commands of a fresh machine: `make run` and `make test`. Everything else is what they use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) deploy/stack.py
STAMP := $(VENV)/.installed

.PHONY: run test stop status setup lint typecheck check unit bench bench-store chaos clean

$(STAMP): setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	deploy/install-system-deps.sh

## Set everything up and run the pipeline (Kafka, FerretDB, worker, API + dashboard).
run: setup
	$(STACK) up --app

## Set everything up, start the services this run needs, run the whole suite, stop what it started.
test: setup
	deploy/install-system-deps.sh test
	deploy/run-tests.sh

stop: $(STAMP)
	$(STACK) down

status: $(STAMP)
	$(STACK) status

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck unit

bench: $(STAMP)
	$(PY) deploy/bench.py --feeds 100 --items 1000 --small-runs 20
	$(PY) deploy/bench.py --feeds 1 --items 1000000 --profile .artifacts/profile-1M
	$(PY) deploy/bench.py --feeds 1 --items 1000000 --format indeed

## The store at a million jobs: FerretDB patched and as shipped (figures only; Kafka must be running).
bench-store: $(STAMP)
	$(PY) deploy/bench_store.py

## Fault injection on a stack of its own (ports, data in .state/chaos/): 3 rounds of 5 faults, 50,000 postings, <= 40 min;
## then the rebalance faults at the moment of the request (worker join, leave, kill -9, join then kill), 20 rounds each.
chaos: $(STAMP)
	$(PY) deploy/chaos.py
	$(PY) deploy/chaos.py --rebalance

clean: stop
	rm -rf .state
