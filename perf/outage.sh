#!/usr/bin/env bash
# A long Kafka outage under load, against separate processes: `kafka-mock`,
# the release daemon, and a generator of numbered lines. All brokers go down
# after WARMUP seconds for OUTAGE seconds; the daemon's RSS, threads and DLQ
# are sampled every second. Prints the RSS at the end of the first minute of
# the outage and at its end, and their ratio (target: within 5%).
#
#   perf/outage.sh [RATE] [OUTAGE_SECONDS] [WARMUP_SECONDS]    defaults: 50000 600 30
set -euo pipefail
rate=${1:-50000}
outage=${2:-600}
warmup=${3:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
binary="$root/target/release/log-capturer"
work=$(mktemp -d)
"$binary" kafka-mock --topic outage:64 > "$work/mock.out" &
mock=$!
cleanup() {
    kill "$mock" "${daemon:-}" "${generator:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^bootstrap: ' "$work/mock.out" 2>/dev/null && break; sleep 0.05; done
bootstrap=$(sed -n 's/^bootstrap: //p' "$work/mock.out")
: > "$work/input.log"
cat > "$work/config.toml" <<TOML
[daemon]
data_dir = "$work/data"
metrics_addr = "127.0.0.1:0"

[dlq]
max_bytes = 4294967296
auto_replay = false

[sources.load]
type = "file"
paths = ["$work/input.log"]

[sinks.kafka]
type = "kafka"
brokers = "$bootstrap"
topic = "outage"
encoding = "raw"
TOML
LOG_CAPTURER_LOG=warn "$binary" run --config "$work/config.toml" 2> "$work/daemon.err" &
daemon=$!
python3 - "$work/input.log" "$rate" <<'PY' &
import sys, time
path, rate = sys.argv[1], int(sys.argv[2])
padding = "x" * 102
start, written = time.monotonic(), 0
with open(path, "a", buffering=1 << 20) as out:
    while True:
        due = int((time.monotonic() - start) * rate)
        if due > written:
            out.write("".join(f"seq={n:012} {padding}\n" for n in range(written, due)))
            out.flush()
            written = due
        time.sleep(0.01)
PY
generator=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }
threads() { awk '/Threads/ {print $2}' "/proc/$daemon/status"; }
dlq() { du -sm "$work/data/dlq" 2>/dev/null | cut -f1; }
echo "machine: $(nproc) cores; rate $rate lines/s; warm-up ${warmup}s; outage ${outage}s"
sleep "$warmup"
echo "before outage: rss $(rss) KiB threads $(threads)"
kill -USR1 "$mock"
rss_first_minute=0
: > "$work/rss.samples"
for second in $(seq "$outage"); do
    sleep 1
    sample=$(rss)
    echo "$second $sample" >> "$work/rss.samples"
    if (( second % 30 == 0 )); then echo "t=${second}s rss ${sample} KiB threads $(threads) dlq $(dlq) MiB"; fi
    if (( second == 60 )); then rss_first_minute=$sample; fi
done
rss_end=$(rss)
python3 - "$work/rss.samples" "$outage" <<'PY'
import statistics, sys
samples = [tuple(map(int, line.split())) for line in open(sys.argv[1])]
outage = int(sys.argv[2])
first = [rss for second, rss in samples if second <= 60]
last = [rss for second, rss in samples if second > outage - 60]
all_rss = [rss for _, rss in samples]
print(f"RSS over the outage: min {min(all_rss)} KiB, max {max(all_rss)} KiB")
print(f"median RSS, first minute: {statistics.median(first):.0f} KiB; last minute: {statistics.median(last):.0f} KiB; ratio {statistics.median(last) / statistics.median(first):.3f}")
PY
kill -USR2 "$mock"
echo "RSS at the end of the first minute: ${rss_first_minute} KiB; at the end: ${rss_end} KiB"
python3 -c "import sys; a, b = int(sys.argv[1]), int(sys.argv[2]); print(f'ratio end/first-minute: {b / a:.3f}' if a else 'outage shorter than a minute')" "$rss_first_minute" "$rss_end"
