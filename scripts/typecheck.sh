#!/usr/bin/env bash
# mypy --strict over every shipped package under its installed name (procvault.*).
# The folders monitor/, streams/ and generators/ install as procvault.monitor, ... through a
# setuptools package-dir mapping that mypy cannot follow through the editable import hook, so
# this builds a tree of symbolic links with the installed layout and checks that.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/procvault"
for f in procvault/*; do
  ln -s "../../../$f" "$tree/procvault/$(basename "$f")"
done
for d in monitor streams generators; do
  ln -s "../../../$d" "$tree/procvault/$d"
done
cd "$tree"
exec ../../.venv/bin/mypy --strict --config-file ../../pyproject.toml -p procvault
