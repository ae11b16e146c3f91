#!/usr/bin/env bash
# Ships a generated file of N lines (~120 bytes each) through the release
# binary into a `kafka-mock` process on loopback (json encoding, lz4), and
# prints lines/s, CPU seconds and peak RSS of the daemon. The mock broker
# runs on the same 2 cores and its CPU is not counted in the daemon's.
#
#   perf/file_to_kafka.sh [LINES]        default 2000000
set -euo pipefail
lines=${1:-2000000}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=perf/bench_common.sh
. "$root/perf/bench_common.sh"
bench_binary
work=$(mktemp -d)
"$binary" kafka-mock --topic bench:64 > "$work/mock.out" &
mock=$!
trap 'kill $mock 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    grep -q '^bootstrap: ' "$work/mock.out" 2>/dev/null && break
    sleep 0.05
done
bootstrap=$(sed -n 's/^bootstrap: //p' "$work/mock.out")
python3 "$root/perf/generate_lines.py" "$work/input.log" "$lines"
{
    bench_file_source "$work"
    echo
    cat <<TOML
[sinks.kafka]
type = "kafka"
brokers = "$bootstrap"
topic = "bench"
encoding = "json"
librdkafka = { "compression.type" = "lz4" }
TOML
} > "$work/config.toml"
bench_machine
LOG_CAPTURER_LOG=warn python3 "$root/perf/measure.py" "$lines" -- "$binary" run --config "$work/config.toml"
