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
# shellcheck source=perf/bench_common.sh
. "$root/perf/bench_common.sh"
bench_binary
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$root/perf/generate_lines.py" "$work/input.log" "$lines"
mkdir "$work/out"
{
    bench_file_source "$work"
    echo
    cat <<TOML
[sinks.archive]
type = "file"
path = "$work/out/output.log"
encoding = "raw"
TOML
} > "$work/config.toml"
bench_machine
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
