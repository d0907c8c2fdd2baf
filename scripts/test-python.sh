#!/usr/bin/env bash
# The Python bindings (bindings-python, package `oscloud`): builds the
# extension into a virtualenv it creates, runs the pytest suite (against
# Python and Rust nodes) and the flood tests with Python servers
# (tests/tests/flood.rs), checks the stubs (mypy.stubtest) and the example
# (mypy --strict), then builds the release wheel, installs it into a fresh
# virtualenv and runs the example there as a smoke test, and a one-round
# smoke run of the Python bench against zenoh-python
# (bindings-python/benches/vs_zenoh.py --quick; scripts/bench-python.sh
# runs it for figures).
# Usage: scripts/test-python.sh   (from anywhere; needs python3 >= 3.9 with venv)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

python=${PYTHON:-python3}
venv=target/py-venv
smoke=target/py-smoke
wheels=target/py-wheels
tools=(maturin==1.16.0 pytest==9.2.0 pytest-asyncio==1.5.0 mypy==2.4.1)

step "python: virtualenv with maturin, pytest, pytest-asyncio, mypy ($venv)"
"$python" --version
if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${tools[@]}"

step "python: build the extension (maturin develop) and the Rust test node"
cargo build -p oscloud-tests --bin oscloud-testnode --locked --quiet
(
  cd bindings-python
  VIRTUAL_ENV="$root/$venv" "$root/$venv/bin/maturin" develop --locked --quiet
)

step "python: pytest"
(
  cd bindings-python
  OSCLOUD_TESTNODE="$root/target/debug/oscloud-testnode" "$root/$venv/bin/python" -m pytest -q -p no:cacheprovider tests
)

step "python: Python servers flooded by a peer in another process (tests/tests/flood.rs)"
OSCLOUD_FLOOD_PYTHON="$root/$venv/bin/python" \
  cargo test --locked -p oscloud-tests --test flood python_server -- --ignored --test-threads 1 --nocapture

step "python: stubs match the native module (mypy.stubtest), package and example type-check (mypy --strict)"
"$venv/bin/python" -m mypy.stubtest --ignore-disjoint-bases oscloud._native
"$venv/bin/python" -m mypy --strict --no-incremental bindings-python/python/oscloud examples/python

step "python: release wheel, installed into a fresh virtualenv, smoke test"
rm -rf "$smoke" "$wheels"
(
  cd bindings-python
  "$root/$venv/bin/maturin" build --release --locked --quiet --out "$root/$wheels"
)
ls "$wheels"
"$python" -m venv "$smoke"
"$smoke/bin/python" -m pip install --quiet --disable-pip-version-check "$wheels"/oscloud-*.whl
# Run from outside the source tree, so only the installed wheel can be used.
(cd /tmp && "$root/$smoke/bin/python" "$root/examples/python/rules.py")
(cd /tmp && "$root/$smoke/bin/python" -c 'import oscloud, sys; assert oscloud.decode(oscloud.encode([1, "a"])) == [1, "a"]; print("wheel ok:", oscloud.__file__)')

step "python: bench smoke run against zenoh-python, release wheel (one round, a tenth of the messages)"
"$smoke/bin/python" -m pip install --quiet --disable-pip-version-check eclipse-zenoh==1.10.2
(cd /tmp && "$root/$smoke/bin/python" "$root/bindings-python/benches/vs_zenoh.py" --quick --rounds 1)
