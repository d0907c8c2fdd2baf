#!/usr/bin/env bash
# Runs every oscloud test: formatting, lints, Rust unit/integration/doc tests,
# packaging checks, then C, Python, serial and the hardware lab (qemu).
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

step "zenoh router for the zenoh tests (pinned, into target/tools)"
scripts/install-zenohd.sh

step "cargo test (unit, integration and doc tests)"
results=$(mktemp)
others=$(mktemp)
ts_out=$(mktemp)
trap 'rm -f "$results" "$others" "$ts_out"' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results"

step "rustdoc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "cargo package (publishable crates)"
publishable=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,sys; print(" ".join("-p "+p["name"] for p in json.load(sys.stdin)["packages"] if p.get("publish") is None))')
# Verification builds each crate against the packaged versions of the
# others, which cargo treats as immutable registry crates keyed by version:
# a copy unpacked or built by an earlier run of the same version would be
# used instead of the current sources. So unpack and build afresh, in a
# cargo home of this run's own (the registry's index and downloads are
# hard-linked from the shared one): deleting unpacked oscloud-* sources in a
# shared cargo home broke any other run building at the same time.
shared_home="${CARGO_HOME:-$HOME/.cargo}"
package_home="$PWD/target/package-check/cargo-home"
rm -rf target/package-check
mkdir -p "$package_home/registry"
for d in index cache; do
  if [ -d "$shared_home/registry/$d" ]; then
    cp -al "$shared_home/registry/$d" "$package_home/registry/" 2>/dev/null ||
      cp -a "$shared_home/registry/$d" "$package_home/registry/"
  fi
done
rm -rf "$package_home"/registry/cache/*/oscloud-*
# shellcheck disable=SC2086
CARGO_HOME="$package_home" CARGO_TARGET_DIR=target/package-check \
  cargo package $publishable --locked --allow-dirty --quiet

step "Python bindings"
scripts/test-python.sh 2>&1 | tee -a "$others"
step "TypeScript client (npm ci, typecheck, node:test, live against a node over ws)"
scripts/test-ts.sh 2>&1 | tee "$ts_out"
step "Web console in headless Chromium (the console's own checks)"
scripts/test-console.sh 2>&1 | tee -a "$others"
step "C bindings"
scripts/test-c.sh 2>&1 | tee -a "$others"
step "Encrypted links and access control"
scripts/test-security.sh
step "oscloud command"
scripts/test-cli.sh 2>&1 | tee -a "$others"
step "Serial transport and the C microcontroller peer"
scripts/test-serial.sh
step "Soak run: calls and pipes through link cuts, memory and fds flat (60 s)"
scripts/test-soak.sh 2>&1 | tee -a "$results"
step "Hardware lab: CAN over a real kernel's vcan/vxcan (qemu)"
scripts/test-hwlab.sh 2>&1 | tee -a "$results"

step "USB and BLE transports in the hardware lab"
scripts/test-hwlab-usb-ble.sh 2>&1 | tee -a "$results"

step "Fuzzing the wire decoders (short run)"
scripts/test-fuzz.sh

step "done in $(( $(date +%s) - start )) s"
# The totals of every suite above, then one closing line with the sum.
cargo_pf=$(awk '/^test result:/ { p += $4; f += $6 } END { printf "%d %d", p, f }' "$results")
py_pf=$(grep -E '^[0-9]+ passed|^[0-9]+ failed|[0-9]+ passed in ' "$others" | tail -1 |
  awk '{ for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p = $i; if ($(i+1) ~ /^failed/) f = $i } } END { printf "%d %d", p, f }')
c_pf=$(awk '/^(C tests|CLI checks): [0-9]+ passed/ { p += $3 } /^console checks: [0-9]+ passed/ { p += $3 } END { printf "%d 0", p }' "$others")
# node:test prints "# pass N" and "# fail N" per run (the suite, then the
# live tests again with Node's own WebSocket).
ts_pf=$(awk '/^# pass [0-9]+$/ { p += $3 } /^# fail [0-9]+$/ { f += $3 } END { printf "%d %d", p, f }' "$ts_out")
read -r cp cf <<<"$cargo_pf"
read -r tp tf <<<"$ts_pf"
read -r pp pf <<<"$py_pf"
read -r xp xf <<<"$c_pf"
echo "cargo tests: $cp passed, $cf failed; pytest: $pp passed, $pf failed; TypeScript: $tp passed, $tf failed; C, CLI and console checks: $xp passed"
echo "tests: $((cp + pp + tp + xp)) passed, $((cf + pf + tf + xf)) failed"
