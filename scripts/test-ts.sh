#!/usr/bin/env bash
# The TypeScript client (clients/ts, package @oscloud/client): installs its
# locked dependencies (npm ci), type-checks and builds it (tsc, strict),
# then runs its node:test suite: the golden vectors of docs/PROTOCOL.md, the
# sans-IO session, the API between two clients in memory, and live tests
# against the Rust test node over a WebSocket (with links cut mid-traffic by
# a TCP proxy, for reconnection and resumption). The live tests run with the
# `ws` package on Node 20 and once more with Node's own WebSocket where
# available (the browser API).
# Usage: scripts/test-ts.sh   (from anywhere; needs node >= 20 and npm)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( node_major < 20 )); then
  echo "test-ts: node >= 20 is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

step "ts: the Rust test node (live tests)"
cargo build -p oscloud-tests --bin oscloud-testnode --locked --quiet
export OSCLOUD_TESTNODE="$root/target/debug/oscloud-testnode"
export OSCLOUD_TS_REQUIRE_LIVE=1

cd clients/ts
step "ts: npm ci (node $(node --version), npm $(npm --version))"
npm ci --no-audit --no-fund

step "ts: typecheck and build (tsc --strict)"
npm run --silent typecheck
npm run --silent build
# The built package imports by its own name (exports map), as a user's code would.
node --input-type=module -e 'const m = await import("@oscloud/client"); if (typeof m.connect !== "function") throw new Error("no connect export");'

step "ts: node --test"
npm test

if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' &&
  node --experimental-websocket -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
  step "ts: live tests again with Node's WebSocket (--experimental-websocket)"
  node --experimental-websocket --test build-test/test/live.test.js build-test/test/reconnect.test.js
fi
