#!/usr/bin/env bash
# sqlx's offline query data (`.sqlx/`, sqlx's current form of `sqlx-data.json`): every query
# macro of the crate (server, benchmark and tests), described against a fresh database made
# by the migrations in `migrations/`.
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

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export DATABASE_URL="sqlite://$scratch/describe.db"
cargo sqlx database create
cargo sqlx migrate run --source migrations >/dev/null
if [ "${1:-}" = "--check" ]; then
  cargo sqlx prepare --check -- --all-targets --locked
else
  cargo sqlx prepare -- --all-targets --locked
fi
