#!/usr/bin/env bash
# Records a file -> null run of the release binary with `perf` and writes a
# flamegraph SVG (inferno). Installs linux-perf and inferno when missing.
#
#   perf/flamegraph.sh [LINES] [OUTPUT.svg]     defaults: 5000000, flamegraph.svg
set -euo pipefail
lines=${1:-5000000}
output=${2:-flamegraph.svg}
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v perf >/dev/null; then
    apt-get update && apt-get install -y linux-perf
fi
if ! command -v inferno-flamegraph >/dev/null; then
    cargo install inferno --locked
fi
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/perf/generate_lines.py" "$work/input.log" "$lines"
cat > "$work/config.toml" <<TOML
[sources.bench]
type = "file"
paths = ["$work/input.log"]
exit_on_eof = true

[sinks.drop]
type = "null"
TOML
perf record -F 4999 --call-graph dwarf,16384 -o "$work/perf.data" -- \
    "$root/target/release/log-capturer" run --config "$work/config.toml"
perf script -i "$work/perf.data" | inferno-collapse-perf | inferno-flamegraph > "$output"
echo "wrote $output"
