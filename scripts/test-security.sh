#!/usr/bin/env bash
# Encrypted links and access control (issue 9): the key-file example end to
# end (mode 0600, refuses to overwrite, --show), then the secure-link
# integration tests again (TCP, Unix, mem, tampering relay, replay, ACL).
# Usage: scripts/test-security.sh   (from anywhere; needs only cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build -q --locked -p oscloud-examples --example keygen
keygen=target/debug/examples/keygen
out=$("$keygen" "$dir/node.key")
mode=$(stat -c %a "$dir/node.key")
[ "$mode" = 600 ] || { echo "key file mode is $mode, expected 600"; exit 1; }
[ "$("$keygen" --show "$dir/node.key")" = "$out" ] || { echo "--show disagrees"; exit 1; }
if "$keygen" "$dir/node.key" 2>/dev/null; then echo "keygen overwrote a key"; exit 1; fi
chmod 644 "$dir/node.key"
if "$keygen" --show "$dir/node.key" 2>/dev/null; then echo "a world-readable key was accepted"; exit 1; fi
echo "keygen: ok ($(echo "$out" | head -1 | cut -c1-20)…)"

cargo test -q --locked -p oscloud-tests --test secure
