#!/usr/bin/env bash
# procvault set-up: everything a fresh machine needs, then `procvault demo` (the confidential
# pipeline end to end on bundled data, with its self-check: the set-up fails if it fails).
#   Python deps in .venv (editable install with the test, dev and bench extras),
#   the Apache Kafka jars from Maven Central (cached in $PROCVAULT_HOME, default ~/.cache/procvault),
#   Debian's prometheus package (used by the metrics tests and `procvault observe`),
#   Debian's graphviz (the pictures `procvault discover` draws),
#   Debian's spin and gcc (tests/formal: the protocol's model checking).
# Needs: python3 >= 3.11, Java 17 (java), Maven (mvn); apt-get for prometheus, graphviz, spin
# and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' not found: $2" >&2; exit 1; }; }

PY=${PYTHON:-python3}
need "$PY" "install Python 3.11 or newer"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: Python >= 3.11 needed" >&2; exit 1; }
need java "install a Java 17 runtime (Debian: openjdk-17-jre-headless)"
need mvn "install Maven (Debian: maven)"

say "Python environment in .venv"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,dev,bench]'

say "Apache Kafka jars (Maven Central, fetched once)"
.venv/bin/procvault kafka install

if ! command -v prometheus >/dev/null 2>&1; then
  say "Prometheus (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q prometheus >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q prometheus >/dev/null; }
fi
prometheus --version 2>&1 | head -1

if ! command -v dot >/dev/null 2>&1; then
  say "graphviz (Debian package: pictures of discovered models)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q graphviz >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q graphviz >/dev/null; }
fi
dot -V 2>&1 | head -1
if ! command -v spin >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then
  say "spin and gcc (Debian packages: the model checker of formal/ and the compiler of its pan)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q spin gcc >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q spin gcc >/dev/null; }
fi
spin -V 2>&1 | head -1

say "procvault demo: the confidential pipeline on bundled data, then its self-check"
.venv/bin/procvault demo
