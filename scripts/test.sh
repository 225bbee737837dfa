#!/usr/bin/env bash
# procvault's test command: lint, format check, strict typing of the engine, then every test
# (unit tests, doctests, and integration tests against one real local Kafka broker).
set -euo pipefail
cd "$(dirname "$0")/.."
export PM4PY_SHOW_PROGRESS_BAR=false
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict monitor
.venv/bin/pytest "$@"
