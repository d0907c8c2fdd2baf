#!/usr/bin/env bash
# Installs liboscloud (shared and static), oscloud.h and oscloud.pc under
# PREFIX (lib/, include/, lib/pkgconfig/).
# Usage: bindings-c/install.sh PREFIX [debug|release]   (default release)
# Builds the library first (cargo build -p oscloud-c).
set -euo pipefail
prefix=${1:?usage: install.sh PREFIX [debug|release]}
profile=${2:-release}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
if [ "$profile" = release ]; then
  cargo build -p oscloud-c --release --locked --quiet
else
  cargo build -p oscloud-c --locked --quiet
fi
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
prefix=$(cd "$prefix" && pwd)
cp "target/$profile/liboscloud.so" "target/$profile/liboscloud.a" "$prefix/lib/"
cp bindings-c/include/oscloud.h "$prefix/include/"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" bindings-c/oscloud.pc.in \
  > "$prefix/lib/pkgconfig/oscloud.pc"
echo "installed liboscloud $version under $prefix"
