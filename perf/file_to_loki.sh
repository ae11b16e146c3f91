#!/usr/bin/env bash
# Ships a generated file of N lines (~120 bytes each) through the release
# binary into the real Loki of ../shared/loki (Grafana Loki 2.7.3, started
# here with its own directory and ports), and prints lines/s, CPU seconds
# and peak RSS of the daemon, Loki's CPU seconds over the same run, and
# the lines Loki holds afterwards. Both share the same cores.
#
#   perf/file_to_loki.sh [LINES] [FORMAT]   default 1000000 protobuf
#
# FORMAT: protobuf (snappy) or json (gzip).
set -euo pipefail
lines=${1:-1000000}
format=${2:-protobuf}
root=$(cd "$(dirname "$0")/.." && pwd)
loki_dir=$root/../shared/loki
[ -x "$loki_dir/loki" ] || { echo "no Loki at $loki_dir/loki" >&2; exit 1; }
# shellcheck source=perf/bench_common.sh
. "$root/perf/bench_common.sh"
bench_binary
work=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(port)
grpc=$(port)
sed -e "s#/tmp/loki-data#$work/loki#" \
    -e "s/http_listen_port: 3100/http_listen_port: $http/" \
    -e "s/grpc_listen_port: 9096/grpc_listen_port: $grpc/" \
    -e "s/127.0.0.1:9096/127.0.0.1:$grpc/" \
    "$loki_dir/loki-local.yaml" > "$work/loki.yaml"
"$loki_dir/loki" -config.file="$work/loki.yaml" > "$work/loki.log" 2>&1 &
loki=$!
trap 'kill $loki 2>/dev/null; wait $loki 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$http/ready" > /dev/null 2>&1 && break
    sleep 0.1
done
python3 "$root/perf/generate_lines.py" "$work/input.log" "$lines"
case $format in
    protobuf) body='format = "protobuf"' ;;
    json) body=$'format = "json"\ncompression = "gzip"' ;;
    *) echo "FORMAT is protobuf or json" >&2; exit 1 ;;
esac
{
    bench_file_source "$work"
    echo
    cat <<TOML
[sinks.loki]
type = "loki"
url = "http://127.0.0.1:$http/loki/api/v1/push"
labels = ["source_id", "service"]
$body
TOML
} > "$work/config.toml"
ticks() { awk '{print $14 + $15}' "/proc/$loki/stat"; }
bench_machine
echo "format: $format"
before=$(ticks)
LOG_CAPTURER_LOG=warn python3 "$root/perf/measure.py" "$lines" -- "$binary" run --config "$work/config.toml"
after=$(ticks)
echo "Loki cpu s:     $(python3 -c "print(($after - $before) / $(getconf CLK_TCK))")"
stored=$(curl -s -G "http://127.0.0.1:$http/loki/api/v1/query" \
    --data-urlencode 'query=sum(count_over_time({service="bench"}[1h]))' |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
echo "lines in Loki:  $stored"
