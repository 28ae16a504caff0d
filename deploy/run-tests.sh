#!/usr/bin/env bash
# `make test`: start the services this run needs (reusing any already running), run the whole
# suite, and stop on exit exactly what this script started, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
record=$(mktemp)
stop_started() { .venv/bin/python deploy/stack.py down --record "$record" || true; }
trap stop_started EXIT
.venv/bin/python deploy/stack.py up --record "$record"
eval "$(.venv/bin/python deploy/stack.py env)"
export KAFKA_BOOTSTRAP_SERVERS MONGO_URL
.venv/bin/ruff check .
.venv/bin/mypy
# Known vulnerabilities in the installed packages fail the run (deploy/audit_deps.py says which, and what to raise).
.venv/bin/python deploy/audit_deps.py
.venv/bin/python -m pytest "$@"
