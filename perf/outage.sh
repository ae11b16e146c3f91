#!/usr/bin/env bash
# A long Kafka outage under load, against separate processes: `kafka-mock`,
# the release daemon, a generator of a VoIP host's log lines
# (perf/voip_lines.py, random identifiers, numbered) and a kcat consumer
# from the end of the outage on.
# All brokers go down after WARMUP seconds for OUTAGE seconds; the daemon's
# RSS, CPU, threads and DLQ are sampled every second. Then the brokers come
# back, the daemon's automatic replay empties the DLQ while the generator
# goes on, the generator stops, and the consumer must have seen every line
# written, once or more.
#
# Prints: the RSS at the end of the first minute of the outage and at its
# end and their ratio (target: within 5%); the daemon's CPU before and
# during the outage; the DLQ's figures at the end of the outage (records,
# bytes used, bytes per line, compression ratio, drops); the replay's
# duration; lines written, delivered, missing and duplicated.
#
#   perf/outage.sh [RATE] [OUTAGE_SECONDS] [WARMUP_SECONDS] [MAX_BYTES]
#   defaults: 50000 600 30 2147483648 (a 2 GiB DLQ)
#
# The topic has 256 partitions: librdkafka's mock broker keeps at most
# 5 MiB per partition and silently drops older data: the topic holds over
# 1 GiB, and the consumer reads it as it fills (it keeps up).
set -euo pipefail
rate=${1:-50000}
outage=${2:-600}
warmup=${3:-30}
max_bytes=${4:-2147483648}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
binary="$root/target/release/log-capturer"
work=$(mktemp -d)
"$binary" kafka-mock --topic outage:256 > "$work/mock.out" &
mock=$!
cleanup() {
    kill "$mock" "${daemon:-}" "${generator:-}" "${consumer:-}" 2>/dev/null || true
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
max_bytes = $max_bytes
auto_replay = true
replay_after_ms = 5000
replay_rate = 200000

[sources.load]
type = "file"
paths = ["$work/input.log"]

[sinks.kafka]
type = "kafka"
brokers = "$bootstrap"
topic = "outage"
encoding = "raw"
TOML
LOG_CAPTURER_LOG=info "$binary" run --config "$work/config.toml" 2> "$work/daemon.err" &
daemon=$!
metrics=
for _ in $(seq 200); do
    metrics=$(sed -n 's/.* started .*metrics=\([^ ]*\).*/\1/p' "$work/daemon.err" | head -1)
    [ -n "$metrics" ] && break
    sleep 0.05
done
[ -n "$metrics" ] || { echo "the daemon did not start:"; cat "$work/daemon.err"; exit 1; }

# The generator: numbered VoIP lines at RATE; writes how many on SIGTERM.
python3 - "$work/input.log" "$rate" "$root/perf" "$work/written" <<'PY' &
import signal, sys, time
path, rate, perf, report = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, perf)
from voip_lines import Lines
lines = Lines("random", 7)
written = 0
def stop(*_):
    with open(report, "w") as out:
        out.write(str(written))
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
start = time.monotonic()
with open(path, "a", buffering=1 << 20) as out:
    while True:
        due = int((time.monotonic() - start) * rate)
        if due > written:
            out.write("".join(f"seq={n:012} {lines.line()}\n" for n in range(written, due)))
            out.flush()
            written = due
        time.sleep(0.01)
PY
generator=$!
rss() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }
threads() { awk '/Threads/ {print $2}' "/proc/$daemon/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
dlq() { du -sm "$work/data/dlq" 2>/dev/null | cut -f1; }
metric() {
    curl -s "http://$metrics/metrics" |
        awk -v name="$1" '$1 == name || index($1, name "{") == 1 {sum += $2} END {printf "%.0f\n", sum}'
}
ticks_per_second=$(getconf CLK_TCK)
echo "machine: $(nproc) cores; rate $rate lines/s; warm-up ${warmup}s; outage ${outage}s; dlq max_bytes $max_bytes"
sleep 5
warm_ticks=$(cpu_ticks); warm_at=$(date +%s.%N)
sleep "$((warmup - 5))"
outage_ticks=$(cpu_ticks); outage_at=$(date +%s.%N)
echo "before outage: rss $(rss) KiB threads $(threads)"
kill -USR1 "$mock"
rss_first_minute=0
: > "$work/rss.samples"
for second in $(seq "$outage"); do
    sleep 1
    sample=$(rss)
    echo "$second $sample" >> "$work/rss.samples"
    if (( second % 30 == 0 )); then
        echo "t=${second}s rss ${sample} KiB threads $(threads) dlq files $(dlq) MiB used $(( $(metric log_capturer_dlq_used_bytes) / 1048576 )) MiB records $(metric log_capturer_dlq_entries) dropped $(metric log_capturer_dlq_dropped_total)"
    fi
    if (( second == 60 )); then rss_first_minute=$sample; fi
done
end_ticks=$(cpu_ticks); end_at=$(date +%s.%N)
rss_end=$(rss)
entries=$(metric log_capturer_dlq_entries)
used=$(metric log_capturer_dlq_used_bytes)
input=$(metric log_capturer_dlq_stored_input_bytes)
size=$(metric log_capturer_dlq_size_bytes)
dropped=$(metric log_capturer_dlq_dropped_total)
errors=$(metric log_capturer_dlq_write_errors_total)
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
python3 - "$warm_ticks" "$warm_at" "$outage_ticks" "$outage_at" "$end_ticks" "$end_at" "$ticks_per_second" <<'PY'
import sys
w, wa, o, oa, e, ea, hz = map(float, sys.argv[1:])
print(f"daemon CPU: {100 * (o - w) / hz / (oa - wa):.1f}% of a core before the outage, {100 * (e - o) / hz / (ea - oa):.1f}% during it (DLQ writes)")
PY
python3 -c '
import sys
entries, used, inp, size, dropped, errors, rate = map(int, sys.argv[1:])
per_line = used / max(entries, 1)
print(f"DLQ at the end of the outage: {entries} records, {used} bytes used ({used / 2**20:.0f} MiB) of {size} bytes of segment files; {per_line:.1f} bytes per line, {inp / max(used, 1):.2f} line bytes per disk byte; {2**30 / per_line / rate / 60:.1f} minutes of a {rate} lines/s outage per GiB; dropped {dropped}, write errors {errors}")
' "$entries" "$used" "$input" "$size" "$dropped" "$errors" "$rate"
kill -USR2 "$mock"
sleep 1
# The consumer, started once the brokers are back (kcat ends when every
# broker is down): every line's sequence number, counted in a bitmap.
kcat -C -b "$bootstrap" -t outage -o beginning -u -q -f '%s\n' \
    -X fetch.wait.max.ms=10 -X queued.min.messages=10000000 2> "$work/kcat.err" |
python3 -c '
import signal, sys, json
report = sys.argv[1]
seen = bytearray(1 << 26)
state = {"lines": 0, "distinct": 0, "duplicates": 0, "foreign": 0}
def save(*_):
    with open(report + ".tmp", "w") as out:
        json.dump(state, out)
    import os; os.replace(report + ".tmp", report)
def stop(*_):
    save(); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGALRM, save)
signal.setitimer(signal.ITIMER_REAL, 1, 1)
for line in sys.stdin.buffer:
    state["lines"] += 1
    if not line.startswith(b"seq="):
        state["foreign"] += 1
        continue
    number = int(line[4:16])
    if seen[number]:
        state["duplicates"] += 1
    else:
        seen[number] = 1
        state["distinct"] += 1
save()
' "$work/consumer.json" &
consumer=$!

echo "RSS at the end of the first minute: ${rss_first_minute} KiB; at the end: ${rss_end} KiB"
python3 -c "import sys; a, b = int(sys.argv[1]), int(sys.argv[2]); print(f'ratio end/first-minute: {b / a:.3f}' if a else 'outage shorter than a minute')" "$rss_first_minute" "$rss_end"

# Replay: until the DLQ is empty (at most 20 minutes).
replay_started=$(date +%s)
for _ in $(seq 1200); do
    sleep 1
    [ "$(metric log_capturer_dlq_entries)" = "0" ] && break
done
echo "DLQ replayed in $(( $(date +%s) - replay_started )) s; records left $(metric log_capturer_dlq_entries); rss $(rss) KiB"
kill -TERM "$generator"; wait "$generator" 2>/dev/null || true
written=$(cat "$work/written")
generator=
# Every line delivered: until the consumer has seen them all (at most 5 minutes).
consume_started=$(date +%s)
for _ in $(seq 300); do
    sleep 1
    distinct=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["distinct"])' "$work/consumer.json" 2>/dev/null || echo 0)
    [ "$distinct" -ge "$written" ] && break
done
echo "consumer caught up $(( $(date +%s) - consume_started )) s after the generator stopped"
kill -TERM "$consumer" 2>/dev/null || true
sleep 1
python3 -c '
import json, sys
state = json.load(open(sys.argv[1]))
written = int(sys.argv[2])
lines, distinct, duplicates, other = (state[key] for key in ("lines", "distinct", "duplicates", "foreign"))
print(f"lines written {written}; consumed {lines}; distinct {distinct}; missing {written - distinct}; duplicates {duplicates}; other {other}")
' "$work/consumer.json" "$written"
echo "dropped $(metric log_capturer_dlq_dropped_total); write errors $(metric log_capturer_dlq_write_errors_total)"
