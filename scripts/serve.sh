#!/usr/bin/env bash
# The README's first command: set everything up, then run the server on its defaults
# (port 5000, SQLite file data/metta-learner.db). Settings come from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec target/release/metta-learner-backend "$@"
