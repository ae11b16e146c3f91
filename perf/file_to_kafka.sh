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
# LOG_CAPTURER_BINARY measures another build side by side (e.g. the
# previous commit's), without building this one.
if [ -z "${LOG_CAPTURER_BINARY:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
binary=${LOG_CAPTURER_BINARY:-$root/target/release/log-capturer}
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
cat > "$work/config.toml" <<TOML
[daemon]
pin_threads = true
data_dir = "$work/data"
metrics_addr = "127.0.0.1:0"

[sources.bench]
type = "file"
paths = ["$work/input.log"]
exit_on_eof = true
labels = { service = "bench" }

[sinks.kafka]
type = "kafka"
brokers = "$bootstrap"
topic = "bench"
encoding = "json"
librdkafka = { "compression.type" = "lz4" }
TOML
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
LOG_CAPTURER_LOG=warn python3 "$root/perf/measure.py" "$lines" -- "$binary" run --config "$work/config.toml"
