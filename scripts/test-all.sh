#!/usr/bin/env bash
# Runs every oscloud test: formatting, lints, Rust unit/integration/doc tests,
# packaging checks. Later parts (C, Python, hardware lab) hook in below.
# Usage: scripts/test-all.sh         (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "toolchain"
cargo --version
rustc --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, integration and doc tests)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results"

step "rustdoc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "cargo package (publishable crates)"
publishable=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,sys; print(" ".join("-p "+p["name"] for p in json.load(sys.stdin)["packages"] if p.get("publish") is None))')
# Verification builds each crate against the packaged versions of the
# others, which cargo treats as immutable registry crates keyed by version:
# a copy unpacked or built by an earlier run of the same version would be
# used instead of the current sources. So unpack and build afresh.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/oscloud-* \
  "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/oscloud-* target/package-check
# shellcheck disable=SC2086
CARGO_TARGET_DIR=target/package-check cargo package $publishable --locked --allow-dirty --quiet

scripts/test-python.sh
scripts/test-serial.sh

step "done in $(( $(date +%s) - start )) s"
# One closing line with the totals of every cargo test binary above.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
