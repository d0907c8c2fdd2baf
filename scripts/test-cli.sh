#!/usr/bin/env bash
# The `oscloud` command end to end, outside the cargo test harness:
# every example topology (TOML and YAML) checks; the sensor example runs in
# one process and as one process per node with the same output, and its
# YAML twin gives the same output too; the graph renders to SVG with
# Graphviz (installed here if missing).
# Usage: scripts/test-cli.sh   (from anywhere; run by scripts/test-all.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing graphviz (for oscloud graph --svg)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz) >/dev/null ||
      echo "warning: could not install graphviz; the SVG check is skipped"
  fi
fi

cargo build -p oscloud-cli --locked --quiet
bin="$PWD/target/debug/oscloud"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }

for f in examples/topologies/*.toml examples/topologies/*.yaml; do
  "$bin" check "$f" >/dev/null
  ok "check $f"
done

sorted_data() { python3 -c 'import json,sys; print("\n".join(sorted(json.loads(l)["data"] for l in open(sys.argv[1]))))' "$1"; }
for mode in one processes; do
  mkdir -p "$work/$mode"
  cp examples/topologies/* "$work/$mode/"
  args=(run sensor-alert.toml)
  [ "$mode" = processes ] && args+=(--processes)
  start=$(date +%s%N)
  (cd "$work/$mode" && timeout 60 "$bin" "${args[@]}" 2>"$work/$mode.err")
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  ok "run sensor-alert.toml ($mode): $(wc -l <"$work/$mode/readings.jsonl") readings, $(wc -l <"$work/$mode/alerts.jsonl") alerts in $ms ms"
done
mkdir -p "$work/yaml"
cp examples/topologies/* "$work/yaml/"
(cd "$work/yaml" && timeout 60 "$bin" run sensor-alert.yaml 2>"$work/yaml.err")
for f in readings.jsonl alerts.jsonl; do
  diff <(sorted_data "$work/one/$f") <(sorted_data "$work/processes/$f")
  ok "same $f in one process and in one process per node"
  diff <(sorted_data "$work/one/$f") <(sorted_data "$work/yaml/$f")
  ok "same $f from the YAML twin"
done

if command -v dot >/dev/null 2>&1; then
  "$bin" graph examples/topologies/sensor-alert.toml --svg "$work/graph.svg"
  grep -q '<svg' "$work/graph.svg"
  ok "graph --svg"
fi
echo "CLI checks: $passed passed"
