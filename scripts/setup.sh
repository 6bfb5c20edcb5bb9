#!/usr/bin/env bash
# Sets up everything the service needs on a fresh Debian machine of this kind, and nothing by
# hand: Debian's Python 3.11 with venv support and its shared library (apt, only when missing),
# the project's own Python environment .venv with the pinned hyperon (pip), and the Rust build.
#
#   scripts/setup.sh            release build (what scripts/serve.sh runs)
#   scripts/setup.sh --debug    debug build (what the tests use)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
[ "${1:-}" = "--debug" ] && profile=debug

# The engine embeds the same interpreter that owns .venv, so the base must be a Python 3.11
# with a shared libpython: Debian's, which also lets unprivileged children run it.
base_python=${PYTHON_BASE:-/usr/bin/python3.11}
need_apt=0
"$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt=1
[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so ] || [ -e /usr/lib/aarch64-linux-gnu/libpython3.11.so ] || need_apt=1
if [ "$need_apt" = 1 ]; then
  echo "setup: installing Debian's python3.11, python3.11-venv and libpython3.11-dev" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root, or install python3.11 python3.11-venv libpython3.11-dev first" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv libpython3.11-dev >/dev/null
fi

# A root server runs learners' code under unprivileged uids, which must reach the project's
# Python environment and the server binary: let other users traverse (not list) every folder
# above the checkout that forbids it (a checkout under /root or in a mktemp -d folder).
if [ "$(id -u)" = 0 ]; then
  dir=$(pwd -P)
  while :; do
    if [ -z "$(find "$dir" -maxdepth 0 -perm -o=x)" ]; then
      echo "setup: chmod o+x $dir (children run as unprivileged users and must reach .venv and the binary)" >&2
      chmod o+x "$dir"
    fi
    [ "$dir" = / ] && break
    dir=$(dirname "$dir")
  done
fi

if ! .venv/bin/python -c 'import hyperon' >/dev/null 2>&1; then
  echo "setup: creating .venv with $(cat requirements.txt | tr '\n' ' ')" >&2
  rm -rf .venv
  "$base_python" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi

echo "setup: building ($profile)" >&2
if [ "$profile" = release ]; then
  cargo build --release --locked
else
  cargo build --locked --all-targets
fi
