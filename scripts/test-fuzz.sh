#!/usr/bin/env bash
# A short fuzz run of every wire decoder and of a link's send side
# (cargo-fuzz / libFuzzer targets in fuzz/): FUZZ_SECONDS per target
# (default 5, ten targets). The toolchain is
# stable: cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1 enables,
# and runs without a sanitizer (--sanitizer none; Rust code here has no
# `unsafe`, and libFuzzer still catches panics, hangs and leaks).
# Usage: scripts/test-fuzz.sh            (from anywhere)
#        FUZZ_SECONDS=120 scripts/test-fuzz.sh   (a longer run)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-5}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build --sanitizer none 2>&1 | tail -n 2
total_runs=0
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
      -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $target FAILED (crash input under fuzz/artifacts/$target)"
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | awk '{ print $2 }')
  echo "fuzz $target: ${runs:-?} executions in ${secs} s, coverage ${cov:-?} edges, no crash"
  total_runs=$((total_runs + ${runs:-0}))
  rm -f "$log"
done
echo "fuzz: $total_runs executions in all, no crash"
