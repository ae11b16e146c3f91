#!/usr/bin/env bash
# Ships a generated file of N lines (~120 bytes each) through the release
# binary, file source -> null sink, and prints lines/s, CPU seconds and peak
# RSS of the daemon process (start-up and shutdown included).
#
#   perf/file_to_null.sh [LINES]        default 5000000
set -euo pipefail
lines=${1:-5000000}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=perf/bench_common.sh
. "$root/perf/bench_common.sh"
bench_binary
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/perf/generate_lines.py" "$work/input.log" "$lines"
cat > "$work/config.toml" <<TOML
[daemon]
pin_threads = true
data_dir = "$work/data"
metrics_addr = "127.0.0.1:0"

[dispatcher]
batch_size = 1000
batch_timeout_ms = 100
queue_capacity = 65536

[sources.bench]
type = "file"
paths = ["$work/input.log"]
exit_on_eof = true

[sinks.drop]
type = "null"
TOML
bench_machine
LOG_CAPTURER_LOG=warn python3 "$root/perf/measure.py" "$lines" -- \
    "$binary" run --config "$work/config.toml"
