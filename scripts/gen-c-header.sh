#!/usr/bin/env bash
# Regenerates bindings-c/include/oscloud.h from the Rust sources (cbindgen,
# run as a library by the header test). Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
OSCLOUD_BLESS=1 cargo test -p oscloud-c --test header --quiet
echo "wrote bindings-c/include/oscloud.h"
