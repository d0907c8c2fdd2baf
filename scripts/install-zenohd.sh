#!/usr/bin/env bash
# Installs the zenoh router `zenohd` (pinned version) into target/tools/bin,
# where the zenoh tests (tests/tests/zenoh.rs) find it. Skipped when that
# exact version is already there. Usage: scripts/install-zenohd.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.10.2
root="$PWD/target/tools"
bin="$root/bin/zenohd"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$version"; then
  echo "zenohd $version already installed at $bin"
  exit 0
fi

start=$(date +%s)
cargo install zenohd --version "$version" --locked --root "$root"
echo "zenohd $version installed at $bin in $(( $(date +%s) - start )) s"
