#!/usr/bin/env bash
# Ships a generated file of N lines (~120 bytes each) through the release
# binary, file source -> file sink (raw), and prints lines/s, CPU seconds and
# peak RSS of the daemon process (start-up and shutdown included); then
# checks that the output file holds N lines (exit 1 if not) and says whether
# it is byte for byte the input.
#
#   perf/file_to_file.sh [LINES]        default 2000000
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
trap 'rm -rf "$work"' EXIT
python3 "$root/perf/generate_lines.py" "$work/input.log" "$lines"
mkdir "$work/out"
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

[sinks.archive]
type = "file"
path = "$work/out/output.log"
encoding = "raw"
TOML
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
LOG_CAPTURER_LOG=warn python3 "$root/perf/measure.py" "$lines" -- "$binary" run --config "$work/config.toml"
written=$(wc -l < "$work/out/output.log")
echo "output lines:   $written"
if [ "$written" -ne "$lines" ]; then
    echo "the output file holds $written lines, not $lines" >&2
    exit 1
fi
if cmp -s "$work/input.log" "$work/out/output.log"; then
    echo "output:         identical to the input"
else
    echo "output:         $lines lines, but not byte for byte the input (order or content differs)"
fi
