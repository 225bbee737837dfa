#!/usr/bin/env bash
# Puts what compose/docker-compose.yml mounts in place: the Sepsis log in compose/logs/ and
# ProMTEE's Sepsis model in compose/models/, copied from the shared data folder
# ($PROCVAULT_SHARED_DATA, default ../shared/data next to the repository). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${PROCVAULT_SHARED_DATA:-../shared/data}
copy() {
  local src="$shared/$1" dest="$2"
  [ -f "$src" ] || { echo "compose-data: $src not found (set PROCVAULT_SHARED_DATA)" >&2; exit 1; }
  cp "$src" "$dest"
  echo "compose-data: $dest ($(wc -c < "$dest") bytes)"
}
copy logs/sepsis_cases.xes.gz compose/logs/sepsis_cases.xes.gz
copy models/promtee/pnml/sepsis.pnml compose/models/sepsis.pnml
