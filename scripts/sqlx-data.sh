#!/usr/bin/env bash
# sqlx's offline query data (`.sqlx/` at the workspace root, sqlx's current form of
# `sqlx-data.json`) for both stores: every query macro of the server crate (server and
# tests) described against a fresh SQLite database made by `migrations/`, and every query
# macro of `crates/store-postgres` described against a fresh PostgreSQL database made by its
# `migrations/` (that crate's `sqlx.toml` names PG_DATABASE_URL), on the project's own test
# server (scripts/pg-test.sh, started when not running; PG_ADMIN_URL names another server).
#
#   scripts/sqlx-data.sh           regenerate .sqlx/ (after changing a query or a migration)
#   scripts/sqlx-data.sh --check   fail when .sqlx/ is stale (what scripts/test.sh runs)
#
# It installs the pinned sqlx-cli (cargo install, a couple of minutes once) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SQLX_CLI_VERSION=0.9.0
if ! cargo sqlx --version 2>/dev/null | grep -qx "sqlx-cli-sqlx $SQLX_CLI_VERSION"; then
  echo "sqlx-data: installing sqlx-cli $SQLX_CLI_VERSION" >&2
  cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --locked --quiet \
    --no-default-features --features sqlite,postgres
fi

if [ -z "${PG_ADMIN_URL:-}" ]; then
  scripts/pg-test.sh start
  PG_ADMIN_URL=$(scripts/pg-test.sh url)
fi
pg_database="sqlx_describe_$$"
pg_url="${PG_ADMIN_URL%/*}/$pg_database"

scratch=$(mktemp -d)
cleanup() {
  DATABASE_URL="$pg_url" cargo sqlx database drop -y >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
export DATABASE_URL="sqlite://$scratch/describe.db"
cargo sqlx database create
cargo sqlx migrate run --source migrations >/dev/null
export PG_DATABASE_URL="$pg_url"
cargo sqlx database create --database-url "$pg_url"
cargo sqlx migrate run --source crates/store-postgres/migrations --database-url "$pg_url" >/dev/null
if [ "${1:-}" = "--check" ]; then
  cargo sqlx prepare --workspace --check -- --all-targets --locked
else
  cargo sqlx prepare --workspace -- --all-targets --locked
fi
