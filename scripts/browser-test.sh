#!/usr/bin/env bash
# The instructor dashboard in a real browser: Debian's Chromium driven by playwright-core
# (tests/browser, node's own test runner) against the real server binary with real hyperon
# and Python jobs. Installs what is missing: Debian's chromium (apt, as root) and the pinned
# playwright-core (npm ci). Never downloads a browser build of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "browser-test: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --ignore-scripts)
fi
cargo build --locked --quiet
cd tests/browser
CHROMIUM="$(command -v chromium)" node --test --test-concurrency=1 dashboard.test.mjs
