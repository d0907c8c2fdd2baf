#!/usr/bin/env bash
# The TypeScript client (clients/ts) in Node against a Rust client, both
# linked to one release-built Rust test node: sequential 64-byte calls and a
# pipe of 64 KiB frames into a sink, in alternating rounds
# (clients/ts/bench/bench.mjs; the Rust client is a second test node driven
# by its `calls` and `fill` commands). A benchmark, not a test: not run by
# scripts/test-all.sh. Figures: BENCHMARKS.md, "The TypeScript client".
# Usage: scripts/bench-ts.sh   (BENCH_ROUNDS, BENCH_CALLS, BENCH_PIPE_MIB, BENCH_TCP=0)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release -p oscloud-tests --bin oscloud-testnode --locked --quiet
export OSCLOUD_TESTNODE="$root/target/release/oscloud-testnode"
cd clients/ts
npm ci --no-audit --no-fund --silent
npm run --silent build
node bench/bench.mjs
