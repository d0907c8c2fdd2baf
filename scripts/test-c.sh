#!/usr/bin/env bash
# C bindings (issue 6): builds and installs liboscloud into target/c/prefix,
# compiles the C tests with gcc -std=c11 -Wall -Wextra -Werror against it
# (found through its pkg-config file), and runs them under valgrind (leaks
# and invalid accesses are errors):
#   - test_unit: one process, two nodes over mem://, every API and error path;
#   - test_links: one process, three nodes chained over a Unix socket and
#     TCP: links, their counters and health, routes through the middle node,
#     closing;
#   - test_supervision: one process, one node: the bounded mailbox, servers
#     that fail, supervisors restarting them per strategy and intensity;
#   - a C server called from Rust and from another C program, over a Unix
#     socket and over TCP (calls, casts, pipes both ways, errors);
#   - a C client calling a Rust server over both transports;
#   - a C worker of a pool (oscloud_servers::pool, examples/pool) over a
#     Unix socket: jobs submitted from Rust, answered in order, a bad job
#     failed and not retried;
#   - the legacy C tool, wrapped by its adapter and by the process server,
#     called from a Rust node over a Unix socket;
#   - a node hosting C servers, flooded by a peer that never reads and by
#     100 000 casts, held to its link budget (tests/tests/flood.rs);
#   - the static library, and the CMake example.
# Usage: scripts/test-c.sh   (from anywhere; called by scripts/test-all.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
printf '\n==> C bindings (scripts/test-c.sh)\n'

has() { command -v "$1" >/dev/null 2>&1; }
apt_updated=
need() { # need COMMAND PACKAGE
  has "$1" && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need gcc gcc
need valgrind valgrind
need pkg-config pkg-config
need cmake cmake
need stdbuf coreutils

out=target/c
rm -rf "$out"
mkdir -p "$out"
tmp=$(mktemp -d /tmp/oscloud-c.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
ok() { passed=$((passed + 1)); printf '  ok  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }

# Wait (at most 30 s: valgrind starts slowly) for a line matching $2 in $1;
# print the line.
wait_line() {
  for _ in $(seq 600); do
    if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  cat "$1" >&2
  fail "no line matching '$2' in $1"
}

echo "building and installing liboscloud (debug) into $out/prefix"
bindings-c/install.sh "$out/prefix" debug
prefix=$(cd "$out/prefix" && pwd)
cargo build --locked --quiet -p oscloud-examples --example node
cargo build --locked --quiet -p oscloud-servers --example process
cargo build --locked --quiet -p oscloud-examples --example pool
pool_bin=target/debug/examples/pool
node_bin=target/debug/examples/node
process_bin=target/debug/examples/process

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export RUST_BACKTRACE=0
# shellcheck disable=SC2207
cflags=(-std=c11 -Wall -Wextra -Werror -pthread -g $(pkg-config --cflags oscloud))
# shellcheck disable=SC2207
libs=($(pkg-config --libs oscloud) "-Wl,-rpath,$prefix/lib")
vg=(valgrind -q --error-exitcode=97 --leak-check=full
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect)

t=bindings-c/c/tests
for prog in test_unit test_links test_supervision c_server c_client flood_server pool_worker; do
  gcc "${cflags[@]}" -o "$out/$prog" "$t/$prog.c" "${libs[@]}"
done
gcc "${cflags[@]}" -o "$out/test_unit_static" "$t/test_unit.c" \
  "$prefix/lib/liboscloud.a" $(pkg-config --libs-only-other --static oscloud) -lpthread -ldl -lm
gcc -std=c11 -Wall -Wextra -Werror -o "$out/checksum" examples/c-legacy/checksum.c
gcc "${cflags[@]}" -Iexamples/c-legacy -o "$out/checksum_server" \
  examples/c-legacy/checksum_server.c "${libs[@]}"
ok "compiled 10 C programs with gcc -std=c11 -Wall -Wextra -Werror (pkg-config oscloud)"

timeout 120 "${vg[@]}" "$out/test_unit" || fail "test_unit under valgrind"
ok "test_unit under valgrind (one process: API, errors, panic, pipes, watch, mem:// link)"
timeout 60 "$out/test_unit_static" >/dev/null 2>&1 || fail "test_unit linked statically"
ok "test_unit linked with liboscloud.a"
timeout 120 "${vg[@]}" "$out/test_links" || fail "test_links under valgrind"
ok "test_links under valgrind (links, counters, link health, routes through a middle node, close_link; Unix socket and TCP)"
timeout 120 "${vg[@]}" "$out/test_supervision" || fail "test_supervision under valgrind"
ok "test_supervision under valgrind (bounded mailbox, failing servers, one-for-one, one-for-all, rest-for-one, intensity)"

# A C server, called from Rust (examples/node) and from another C program.
for uri in "unix://$tmp/c-server.sock" "tcp://127.0.0.1:0"; do
  log=$tmp/server.log
  : >"$log"
  timeout 120 "${vg[@]}" "$out/c_server" "$uri" cupper >"$log" 2>&1 &
  server=$!
  pids+=("$server")
  at=$(wait_line "$log" '^listening on ' | sed 's/^listening on //')
  reply=$(timeout 30 "$node_bin" --connect "$at" --call cupper hello | grep '^reply: ') ||
    fail "Rust call to the C server at $at"
  [ "$reply" = "reply: HELLO" ] || fail "Rust got '$reply' from the C server"
  ok "Rust node calls a C server over ${uri%%:*}"
  timeout 120 "${vg[@]}" "$out/c_client" "$at" cupper --c-server >"$tmp/client.log" 2>&1 ||
    { rc=$?; cat "$tmp/client.log" "$log" >&2; fail "C client against the C server at $at (exit $rc)"; }
  wait "$server" || { cat "$log" >&2; fail "C server at $at (valgrind or checks)"; }
  ok "C client calls a C server over ${uri%%:*} (calls, casts, pipes both ways, timeout, errors; both under valgrind)"
done

# A C client calling a Rust server.
for uri in "unix://$tmp/rust-server.sock" "tcp://127.0.0.1:0"; do
  log=$tmp/rust.log
  : >"$log"
  timeout 120 "$node_bin" --listen "$uri" --serve upper >"$log" 2>&1 &
  server=$!
  pids+=("$server")
  at=$(wait_line "$log" '^listening on ' | sed 's/^listening on //')
  timeout 120 "${vg[@]}" "$out/c_client" "$at" upper >"$tmp/client.log" 2>&1 ||
    { rc=$?; cat "$tmp/client.log" "$log" >&2; fail "C client against the Rust server at $at (exit $rc)"; }
  kill -INT "$server"
  wait "$server" || true
  ok "C client calls a Rust server over ${uri%%:*} (under valgrind)"
done

# A C worker of a pool: 20 numbers and one bad job submitted from Rust.
log=$tmp/pool.log
: >"$log"
timeout 120 "$pool_bin" serve --listen "unix://$tmp/pool.sock" >"$log" 2>&1 &
server=$!
pids+=("$server")
wait_line "$log" '^listening on ' >/dev/null
timeout 120 "${vg[@]}" "$out/pool_worker" "unix://$tmp/pool.sock" square 21 >"$tmp/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
wait_line "$tmp/worker.log" '^serving square/c-' >/dev/null
# shellcheck disable=SC2046
timeout 60 "$pool_bin" submit --connect "unix://$tmp/pool.sock" $(seq 20) x >"$tmp/submit.log" 2>&1 ||
  { cat "$tmp/submit.log" "$tmp/worker.log" >&2; fail "submitting to the pool of a C worker"; }
[ "$(grep -c ' -> ' "$tmp/submit.log")" = 21 ] || { cat "$tmp/submit.log" >&2; fail "21 results"; }
for n in $(seq 20); do
  grep -qx "$n -> $((n * n))" "$tmp/submit.log" || { cat "$tmp/submit.log" >&2; fail "job $n"; }
done
grep -q '^x -> error Failed(.*not a number' "$tmp/submit.log" || { cat "$tmp/submit.log" >&2; fail "bad job"; }
grep -q '^pool: 20 done, 1 failed, 0 retried' "$tmp/submit.log" || { cat "$tmp/submit.log" >&2; fail "pool counters"; }
wait "$worker" || { cat "$tmp/worker.log" >&2; fail "C pool worker (valgrind or checks)"; }
kill -TERM "$server"
wait "$server" || true
ok "C pool worker under valgrind: 20 jobs from Rust through the pool answered in order, a bad job failed, not retried"

# C servers flooded by a peer in another process (calls never read, casts
# to a slow server): the node stays within its link budget.
OSCLOUD_FLOOD_C_SERVER=$(pwd)/$out/flood_server \
  cargo test --locked --quiet -p oscloud-tests --test flood c_server -- --ignored --test-threads 1 \
  >"$tmp/flood.log" 2>&1 || { cat "$tmp/flood.log" >&2; fail "flood tests with C servers"; }
grep -q 'test result: ok. 2 passed' "$tmp/flood.log" || { cat "$tmp/flood.log" >&2; fail "flood tests with C servers did not run"; }
ok "C servers flooded (calls never read, 100k casts to a slow server): node held to its link budget"

# The legacy tool: as is, through its adapter, through the process server.
want=$(printf 'hello world\n' | "$out/checksum")
log=$tmp/legacy.log
: >"$log"
timeout 120 "${vg[@]}" "$out/checksum_server" "unix://$tmp/checksum.sock" >"$log" 2>&1 &
server=$!
pids+=("$server")
wait_line "$log" '^serving ' >/dev/null
reply=$(timeout 30 "$node_bin" --connect "unix://$tmp/checksum.sock" --call checksum "hello world" |
  grep '^reply: ') || fail "Rust call to checksum_server"
[ "$reply" = "reply: $want" ] || fail "checksum_server answered '$reply', the tool says '$want'"
kill -TERM "$server"
wait "$server" || { cat "$log" >&2; fail "checksum_server (valgrind)"; }
ok "legacy checksum tool behind its C adapter, called by a Rust node over a Unix socket ($want)"

log=$tmp/process.log
: >"$log"
timeout 120 "$process_bin" --listen "unix://$tmp/process.sock" --name checksum -- \
  stdbuf -oL "$out/checksum" >"$log" 2>&1 &
server=$!
pids+=("$server")
wait_line "$log" '^serving ' >/dev/null
reply=$(timeout 30 "$node_bin" --connect "unix://$tmp/process.sock" --call checksum "hello world" |
  grep '^reply: ') || fail "Rust call to the process server"
[ "$reply" = "reply: $want" ] || fail "the process server answered '$reply', the tool says '$want'"
kill -TERM "$server"
wait "$server" || fail "process server example"
ok "legacy checksum tool unmodified and unlinked, behind the process server"

# The CMake example finds the installed library through pkg-config.
cmake -S bindings-c/examples/cmake -B "$out/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" >/dev/null
cmake --build "$out/cmake" >/dev/null
timeout 30 "$out/cmake/hello_oscloud" | grep -q 'echo answered: hello from C' ||
  fail "CMake example"
ok "CMake example (find via pkg-config, build, run)"

echo "C tests: $passed passed"
