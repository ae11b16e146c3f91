#!/usr/bin/env bash
# Records the release binary with `perf` and writes a flamegraph SVG
# (inferno). Installs linux-perf and inferno when missing.
#
#   perf/flamegraph.sh [LINES] [OUTPUT.svg]            a burst: LINES lines file -> null (defaults 5000000, flamegraph.svg)
#   perf/flamegraph.sh --steady RATE SECS OUTPUT.svg   the operating point: perf/steady.sh RATE SECS (file -> Kafka), the daemon profiled after the warm-up
#
# LOG_CAPTURER_BINARY profiles another build (e.g. the previous commit's)
# without building this one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v perf >/dev/null; then
    apt-get update && apt-get install -y linux-perf
fi
if ! command -v inferno-flamegraph >/dev/null; then
    cargo install inferno --locked
fi
if [ -z "${LOG_CAPTURER_BINARY:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
binary=${LOG_CAPTURER_BINARY:-$root/target/release/log-capturer}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "${1:-}" = "--steady" ]; then
    if [ $# -ne 4 ]; then
        sed -n 's/^#   //p' "$0" >&2
        exit 2
    fi
    rate=$2
    secs=$3
    output=$4
    warmup=5
    if [ "$secs" -le $((warmup + 5)) ]; then
        echo "SECS must be more than $((warmup + 5))" >&2
        exit 2
    fi
    STEADY_RSYSLOG=0 STEADY_WARMUP=$warmup LOG_CAPTURER_BINARY=$binary \
        "$root/perf/steady.sh" "$rate" "$secs" > "$work/steady.out" 2>&1 &
    steady=$!
    daemon=
    for _ in $(seq 1 300); do
        daemon=$(pgrep -f -n "^$binary run --config" || true)
        [ -n "$daemon" ] && break
        sleep 0.1
    done
    if [ -z "$daemon" ]; then
        cat "$work/steady.out" >&2
        echo "the daemon of perf/steady.sh did not start" >&2
        exit 1
    fi
    sleep "$warmup"
    perf record -F 999 --call-graph dwarf,16384 -o "$work/perf.data" \
        -p "$daemon" -- sleep $((secs - warmup - 3)) 2> "$work/perf.err"
    wait "$steady"
    grep -E "CPU s per million|RSS median|latency p99, ms|lines missing" "$work/steady.out"
else
    lines=${1:-5000000}
    output=${2:-flamegraph.svg}
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
        "$binary" run --config "$work/config.toml"
fi
perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf | inferno-flamegraph > "$output"
echo "wrote $output"
