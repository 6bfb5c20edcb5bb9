#!/usr/bin/env bash
# The README's second command: set everything up, then run the whole test suite against the
# real binary, real SQLite files and a real PostgreSQL server, the real hyperon engine and a
# real Python interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --debug
# The project's own PostgreSQL (Debian's, installed when missing) on loopback, in
# target/pg-test/, stopped at the end whatever happens.
scripts/pg-test.sh start
trap 'scripts/pg-test.sh stop' EXIT
export TEST_PG_ADMIN_URL
TEST_PG_ADMIN_URL=$(scripts/pg-test.sh url)
# sqlx's offline query data must match every query and migration of both stores.
PG_ADMIN_URL=$TEST_PG_ADMIN_URL scripts/sqlx-data.sh --check
cargo fmt --all -- --check
cargo clippy --workspace --locked --all-targets -- -D warnings
# Everything on SQLite (the default store).
cargo test --workspace --locked --all-targets -- --test-threads "${TEST_THREADS:-2}"
# The suites about the store, again on PostgreSQL (a fresh database per server).
TEST_STORE=postgres cargo test --test api --locked -- --test-threads "${TEST_THREADS:-2}" \
  jobs:: sessions_api:: restart:: contract:: learners::
# The reliability suite (kills the server and the engine under load; about 1-2 minutes), and
# the multi-host one (three servers on one PostgreSQL, one killed twice under load), one after
# the other: each is meant to be the only load on the machine while it runs.
cargo test --test api --locked -- --ignored --nocapture --test-threads 1 reliability
# Schema-based fuzzing of the live API from its OpenAPI document (schemathesis; under a minute).
scripts/fuzz-api.sh
# The instructor dashboard in Debian's Chromium (playwright-core; about half a minute).
scripts/browser-test.sh
