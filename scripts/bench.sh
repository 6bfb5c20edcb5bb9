#!/usr/bin/env bash
# Benchmarks the service against the MeTTa engine's own speed, in one run on this machine:
# sets everything up and builds (release: the server, then the benchmark crate crates/bench),
# then runs target/release/metta-learner-bench, which prints a markdown report and writes
# bench/results/latest.md and bench/results/latest.json.
# Progress goes to stderr; the report to stdout. Takes about a minute on 2 cores. Then, as
# root, scripts/session_cost.py measures what one process per live MeTTa session costs.
#
#   scripts/bench.sh --scaling   1, 2 and 3 server processes on one PostgreSQL (the project's
#                                own, scripts/pg-test.sh, started and stopped here); writes
#                                bench/results/scaling.md
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p metta-learner-bench
if [ "${1:-}" = "--scaling" ]; then
  scripts/pg-test.sh start
  trap 'scripts/pg-test.sh stop' EXIT
  BENCH_PG_ADMIN_URL=$(scripts/pg-test.sh url) target/release/metta-learner-bench "$@"
  exit 0
fi
target/release/metta-learner-bench "$@"
# The cost of one process per live MeTTa session (fork-to-ready, private memory, rebuild).
if [ "$(id -u)" = 0 ] && [ "${1:-}" != --quick ]; then
  echo
  .venv/bin/python scripts/session_cost.py
fi
