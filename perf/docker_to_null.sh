#!/usr/bin/env bash
# Docker json-file logs -> null sink, beside the same lines from a plain
# file source: lines/s, CPU seconds per million and peak RSS (median of
# ROUNDS, alternating). Starts a private dockerd; needs root, docker.io and
# busybox-static (see perf/docker_to_null.py).
#
#   perf/docker_to_null.sh [LINES] [ROUNDS]     default 3000000 2
set -euo pipefail
lines=${1:-3000000}
rounds=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=perf/bench_common.sh
. "$root/perf/bench_common.sh"
bench_binary
bench_machine
python3 "$root/perf/docker_to_null.py" "$binary" "$lines" "$rounds"
