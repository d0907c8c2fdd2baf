#!/usr/bin/env bash
# The bounded soak run: two node processes under steady calls and pipe
# transfers while a fault relay cuts their link at seeded random moments;
# every call and byte is checked, and each process's memory and file
# descriptors must stay flat (tests/tests/soak.rs). OSCLOUD_SOAK_SECS sets
# the length (60 s here; a documented longer run uses 3600).
# Usage: scripts/test-soak.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
export OSCLOUD_SOAK_SECS="${OSCLOUD_SOAK_SECS:-60}"
cargo test -p oscloud-tests --locked --test soak -- --ignored --nocapture
