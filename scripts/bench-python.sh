#!/usr/bin/env bash
# oscloud from Python against zenoh-python (eclipse-zenoh 1.10.2): casts,
# pipe frames and calls between two Python processes, in interleaved
# rounds (bindings-python/benches/vs_zenoh.py). Builds the release
# extension into its own virtualenv (target/py-bench, so the debug build
# scripts/test-python.sh puts in target/py-venv is left alone). A
# benchmark, not a test: not run by scripts/test-all.sh. Figures:
# BENCHMARKS.md, "From Python".
# Usage: scripts/bench-python.sh [--rounds N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}
venv=target/py-bench
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin==1.16.0 eclipse-zenoh==1.10.2
(
  cd bindings-python
  VIRTUAL_ENV="$root/$venv" "$root/$venv/bin/maturin" develop --release --locked --quiet
)
"$venv/bin/python" bindings-python/benches/vs_zenoh.py "$@"
