#!/usr/bin/env bash
# Serial link and C microcontroller peer checks (the pty tests of the Rust
# transport run with the workspace's cargo test; this adds the C side):
#   1. peers/c-micro compiles with gcc -std=c99 -Wall -Wextra -Werror -pedantic;
#   2. its self-test (framing, Hello layout, two C nodes, garbage) passes,
#      built once plainly and once with -fsanitize=address,undefined;
#   3. the Rust <-> C pty test runs against the sanitizer build of the host.
# Usage: scripts/test-serial.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v gcc >/dev/null; then
  echo "installing gcc"
  apt-get update -qq && apt-get install -y -qq gcc
fi

out=target/c-micro
mkdir -p "$out"
src=peers/c-micro
strict=(-std=c99 -Wall -Wextra -Werror -pedantic)
san=(-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

echo "== C peer: strict C99 build"
gcc "${strict[@]}" -O2 -c "$src/oscloud_micro.c" -o "$out/oscloud_micro.o"
gcc "${strict[@]}" -O2 "$src/test/om_test.c" "$src/oscloud_micro.c" -o "$out/om_test"
gcc "${strict[@]}" -O2 -DOM_MAX_PACKET=1024 "$src/host/om_host.c" "$src/oscloud_micro.c" -o "$out/om_host"
# The library alone, as a microcontroller would build it: no stdio, small buffers.
gcc "${strict[@]}" -Os -DOM_MAX_PACKET=128 -DOM_TX_SLOTS=2 -DOM_MAX_SERVERS=2 \
  -c "$src/oscloud_micro.c" -o "$out/oscloud_micro_small.o"
size "$out/oscloud_micro_small.o" 2>/dev/null || true

echo "== C peer: self-test"
"$out/om_test" 50000

echo "== C peer: self-test with AddressSanitizer + UBSan"
gcc "${strict[@]}" "${san[@]}" "$src/test/om_test.c" "$src/oscloud_micro.c" -o "$out/om_test_san"
gcc "${strict[@]}" "${san[@]}" -DOM_MAX_PACKET=1024 "$src/host/om_host.c" "$src/oscloud_micro.c" -o "$out/om_host_san"
"$out/om_test_san" 200000

echo "== Rust node <-> C peer over a pty, sanitizer build of the C peer"
OSCLOUD_C_HOST="$PWD/$out/om_host_san" cargo test -p oscloud-tests --test c_peer --locked -- --nocapture
