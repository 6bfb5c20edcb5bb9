#!/usr/bin/env bash
# The README's second command: set everything up, then run the whole test suite against the
# real binary, real SQLite files, the real hyperon engine and a real Python interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --debug
# sqlx's offline query data must match every query and migration (fails when stale).
scripts/sqlx-data.sh --check
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets -- --test-threads "${TEST_THREADS:-2}"
# The reliability suite (kills the server and the engine under load; about 1-2 minutes).
cargo test --test api --locked -- --ignored --nocapture reliability
# Schema-based fuzzing of the live API from its OpenAPI document (schemathesis; under a minute).
scripts/fuzz-api.sh
# The instructor dashboard in Debian's Chromium (playwright-core; about half a minute).
scripts/browser-test.sh
