#!/usr/bin/env bash
# The live web console (`oscloud run --console`, clients/console): installs
# its locked npm dependencies (npm ci), type-checks it, checks that the
# bundle committed in cli/assets/console is what the sources build, then
# runs the console in a real headless browser: Debian's chromium (installed
# with apt-get if missing) driven by playwright-core (which downloads no
# browser). The browser test starts three nodes as three processes
# (`oscloud run --node`, TCP), opens the console on node a, and checks the
# graph, link stats, the registry, a call from the form, a tap, the terminal
# on a remote shell (typed keys in, the shell's output back), and that a
# SIGKILLed node leaves the graph, and a call to a Python server on a
# Python node linked to a (the Python package is built into target/py-venv
# as scripts/test-python.sh does; CONSOLE_PYTHON=0 leaves it out). Node
# b serves a second console with --console-read-only: it shows the graph
# and link stats and taps, and its calls are refused by the node. A
# screenshot goes to docs/console.png with SCREENSHOT=1.
# Usage: scripts/test-console.sh   (from anywhere; needs node >= 20, npm; root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( node_major < 20 )); then
  echo "test-console: node >= 20 is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $chromium ]]; then
  step "console: installing Debian's chromium"
  sudo=""
  if (( $(id -u) != 0 )); then sudo="sudo"; fi
  $sudo apt-get update -qq
  # fonts: xterm.js measures its cells with them, the screenshot shows them
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core
fi
export CHROMIUM=$chromium

python_ok=0
if [[ ${CONSOLE_PYTHON:-1} != 0 ]]; then
  step "console: the Python package (target/py-venv, maturin develop)"
  venv=target/py-venv
  if [[ ! -x $venv/bin/python ]]; then
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check maturin==1.16.0
  (cd bindings-python && VIRTUAL_ENV="$root/$venv" "$root/$venv/bin/maturin" develop --locked --quiet)
  python_ok=1
fi

step "console: the oscloud binary"
cargo build -p oscloud-cli --bin oscloud --locked --quiet
oscloud="$root/target/debug/oscloud"

cd clients/console
step "console: npm ci (node $(node --version), npm $(npm --version))"
npm ci --no-audit --no-fund

step "console: typecheck (tsc --strict) and bundle freshness"
npm run --silent typecheck
npm run --silent check

step "console: in headless chromium ($("$chromium" --version 2>/dev/null || echo "$chromium"))"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do { wait "$p"; } 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
port=$(free_port)
console_port=$(free_port)
ro_port=$(free_port)
sed "s/@PORT@/$port/g" test/topology.toml > "$work/topology.toml"
cp test/ticks.txt "$work/"
"$oscloud" check "$work/topology.toml"

"$oscloud" run "$work/topology.toml" --node a --console "127.0.0.1:$console_port" > "$work/a.log" 2>&1 &
pids+=($!)
"$oscloud" run "$work/topology.toml" --node b --console "127.0.0.1:$ro_port" --console-read-only > "$work/b.log" 2>&1 &
pids+=($!)
"$oscloud" run "$work/topology.toml" --node c > "$work/c.log" 2>&1 &
c_pid=$!
pids+=("$c_pid")
disown "$c_pid" # the test SIGKILLs it: no "Killed" notice from bash

url="http://127.0.0.1:$console_port/"
ro_url="http://127.0.0.1:$ro_port/"
deadline=$((SECONDS + 30))
until node -e 'Promise.all(process.argv.slice(1).map((u) => fetch(u))).then((rs) => process.exit(rs.every((r) => r.ok) ? 0 : 1), () => process.exit(1))' "$url" "$ro_url"; do
  if (( SECONDS > deadline )); then
    echo "test-console: the console did not answer at $url" >&2
    cat "$work"/*.log >&2
    exit 1
  fi
  sleep 0.1
done

py_server=""
if (( python_ok )); then
  "$root/target/py-venv/bin/python" test/py_server.py "tcp://127.0.0.1:$port" > "$work/py.log" 2>&1 &
  pids+=($!)
  py_server=py-reverse
fi

shot=""
if [[ ${SCREENSHOT:-0} == 1 ]]; then shot="$root/docs/console.png"; fi
status=0
CONSOLE_URL=$url RO_URL=$ro_url KILL_PID=$c_pid KILL_NODE=c SCREENSHOT=$shot PY_SERVER=$py_server node test/browser.mjs || status=$?
if (( status != 0 )); then
  echo "--- node logs" >&2
  tail -n 20 "$work"/*.log >&2
fi
exit "$status"
