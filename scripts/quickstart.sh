#!/usr/bin/env bash
# Quick-start: a real local Kafka, a simulated order-to-cash process split across three
# organizations (customer, supplier, carrier), one topic per organization, read back.
set -euo pipefail
cd "$(dirname "$0")/.."
PV=.venv/bin/procvault
PORT=${PROCVAULT_KAFKA_PORT:-19092}
run=$(date +%s)

started=0
if ! $PV kafka status >/dev/null 2>&1; then
  $PV kafka up
  started=1
fi
trap '[ "$started" = 1 ] && $PV kafka down' EXIT

$PV simulate examples/order_to_cash.pnml --seed 1 --cases 500 --end-markers \
  --split-map examples/order_to_cash_orgs.yaml --to "kafka://127.0.0.1:$PORT/quickstart-$run.{org}"
echo "The carrier's first three events:"
$PV tail "kafka://127.0.0.1:$PORT/quickstart-$run.carrier" --max 3
