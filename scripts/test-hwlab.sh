#!/usr/bin/env bash
# Hardware transports against a real Linux kernel: builds the lab's test
# binaries on the host and runs them inside tests/hwlab/run (Debian's
# kernel under qemu with vcan, vxcan, can_raw, ...). Installs what the lab
# needs on first use (see tests/hwlab/README.md).
# Usage: scripts/test-hwlab.sh [TEST-FILTER]   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."

suites=(hwlab_can)

start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
bins=()
for suite in "${suites[@]}"; do
  exe=$(cargo test -p oscloud-tests --test "$suite" --locked --no-run --message-format=json 2>"$log" |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' | tail -1)
  [ -n "$exe" ] || { cat "$log"; echo "cannot build test suite $suite"; exit 1; }
  bins+=("$exe")
done
echo "== built in $(( $(date +%s) - start )) s: ${bins[*]}"

# One boot runs every suite (the lab prints the boot and install times).
script='rc=0
for exe in "$@"; do
  echo "== $exe"
  "$exe" --ignored --test-threads=1 --nocapture ${HWLAB_FILTER:-} || rc=1
done
exit $rc'
# The suite takes 3-6 min under emulation on a busy 2-core machine.
export HWLAB_TIMEOUT=${HWLAB_TIMEOUT:-900}
HWLAB_FILTER=${1:-} tests/hwlab/run /bin/sh -c "$script" sh "${bins[@]}"
