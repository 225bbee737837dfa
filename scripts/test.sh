#!/usr/bin/env bash
# procvault's test command: lint, format check, mypy --strict over every shipped package, then every test
# (unit tests, doctests, and integration tests against one real local Kafka broker).
set -euo pipefail
cd "$(dirname "$0")/.."
export PM4PY_SHOW_PROGRESS_BAR=false
.venv/bin/ruff check .
.venv/bin/ruff format --check .
./scripts/typecheck.sh
.venv/bin/pytest "$@"
