#!/usr/bin/env bash
# Schema-based fuzzing of the live API from its own OpenAPI document (/api/v1/openapi.json):
# schemathesis sends generated valid and invalid requests to every documented operation of a
# real server (real SQLite file, hyperon, Python) and checks that nothing answers 5xx and that
# every answer's status, content type, headers and body are what the document says.
#
# schemathesis lives in its own environment, .venv-tools (installed here only when missing).
# The server it starts has the rate limit off (the fuzzer is one very busy client), short run
# deadlines (generated code may loop) and an instructor token the fuzzer sends. The run is
# bounded: FUZZ_MAX_EXAMPLES cases per operation and phase (default 50), and FUZZ_MAX_SECONDS
# in all (default 600; schemathesis' own --max-time would keep fuzzing until it is spent).
# One worker: schemathesis' generator hits a CPython 3.11 ast bug when two threads build
# strategies at once.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
TOOLS=.venv-tools
if ! "$TOOLS/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "fuzz-api: installing schemathesis $SCHEMATHESIS_VERSION into $TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked --quiet
work=$(mktemp -d -t mlb-fuzz-XXXXXX)
token="fuzz-instructor-$RANDOM$RANDOM"
PORT=0 HOST=127.0.0.1 DATABASE_URL="sqlite://$work/fuzz.db" PYTHON=.venv/bin/python \
  RATE_LIMIT_PER_MINUTE=0 RUN_TIMEOUT_SECS=2 LEGACY_WAIT_SECS=10 ENGINE_KILL_GRACE_MS=500 \
  INSTRUCTOR_TOKEN="$token" RUST_LOG=warn,metta_learner_backend::app=info \
  target/debug/metta-learner-backend 2>"$work/server.log" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base=""
for _ in $(seq 1 300); do
  base=$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | head -n1 | sed 's/listening on //' || true)
  [ -n "$base" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; echo "fuzz-api: the server did not start"; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { cat "$work/server.log"; echo "fuzz-api: no address in the server's log"; exit 1; }
echo "fuzz-api: fuzzing $base from $base/api/v1/openapi.json"

status=0
timeout "${FUZZ_MAX_SECONDS:-600}" "$TOOLS/bin/st" run "$base/api/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --header "Authorization: Bearer $token" \
  --max-examples "${FUZZ_MAX_EXAMPLES:-50}" \
  --workers 1 \
  --seed 12 \
  --request-timeout 30 \
  --generation-database none \
  --no-color \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz-api: failed; the server's log:"
  tail -n 50 "$work/server.log"
  exit "$status"
fi
echo "fuzz-api: passed"
