#!/usr/bin/env bash
# Benchmarks the service against the MeTTa engine's own speed, in one run on this machine:
# sets everything up and builds (release), then runs target/release/metta-learner-bench, which
# prints a markdown report and writes bench/results/latest.md and bench/results/latest.json.
# Progress goes to stderr; the report to stdout. Takes about a minute on 2 cores. Then, as
# root, scripts/session_cost.py measures what one process per live MeTTa session costs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
target/release/metta-learner-bench "$@"
# The cost of one process per live MeTTa session (fork-to-ready, private memory, rebuild).
if [ "$(id -u)" = 0 ] && [ "${1:-}" != --quick ]; then
  echo
  .venv/bin/python scripts/session_cost.py
fi
