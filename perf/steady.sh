#!/usr/bin/env bash
# Steady-state file -> Kafka, side by side: a writer appends 120-byte lines
# to a fresh file at RATE lines/s for SECS seconds, each line carrying its
# write time; the release binary tails the file into a `kafka-mock` cluster
# (topic `steady`, 4 partitions, raw, lz4, every other key at its default);
# a live consumer (kcat) stamps each line's arrival. Then, where rsyslog and
# its omkafka module are installed, rsyslogd runs the same scenario (imfile in
# inotify mode -> omkafka, topic `steady-rsyslog` of the same cluster, the
# message alone), after the daemon has stopped, so that the two never share
# the cores.
#
# Over the window after a warm-up (STEADY_WARMUP seconds, default 5) it
# prints, per tool: lines written and consumed, CPU seconds per million lines
# (utime + stime of the whole process over the window), RSS (median and max
# of a sample a second, and the peak), write -> consumable latency
# percentiles, and the daemon's own read -> ack latency from its /metrics;
# then the ratios log-capturer / rsyslog.
#
#   perf/steady.sh RATE SECS [-- OVERRIDE...]
#
# An OVERRIDE is TOML merged over the daemon's config (see
# perf/steady_config.py), e.g.
#   perf/steady.sh 50000 25 -- 'dispatcher.batch_timeout_ms = 5'
# STEADY_RSYSLOG=0 skips rsyslog. The mock broker, kcat and the writer run on
# the same cores; their CPU is not counted in either tool's.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n 's/^#   //p' "$0" >&2
    exit 2
fi
rate=$1
secs=$2
shift 2
if [ "${1:-}" = "--" ]; then
    shift
fi
overrides=("$@")
warmup=${STEADY_WARMUP:-5}
drain=${STEADY_DRAIN:-15}
root=$(cd "$(dirname "$0")/.." && pwd)
perf=$root/perf
# LOG_CAPTURER_BINARY measures another build side by side (e.g. the
# previous commit's), without building this one.
if [ -z "${LOG_CAPTURER_BINARY:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
binary=${LOG_CAPTURER_BINARY:-$root/target/release/log-capturer}
if ! python3 -c "import sys; sys.exit(not (float('$secs') > float('$warmup') >= 0 and int('$rate') > 0))" 2>/dev/null; then
    echo "RATE must be a positive integer and SECS more than the warm-up ($warmup s)" >&2
    exit 2
fi
command -v kcat > /dev/null || { echo "kcat is needed (apt-get install kcat)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2> /dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2> /dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops a process: SIGTERM, then SIGKILL after 10 s.
stop() {
    local pid=$1
    kill -TERM "$pid" 2> /dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2> /dev/null || { wait "$pid" 2> /dev/null || true; return 0; }
        sleep 0.1
    done
    echo "process $pid did not stop in 10 s: killed" >&2
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
}

now_ns() { date +%s%N; }

"$binary" kafka-mock --topic steady:4 --topic steady-rsyslog:4 > "$work/mock.out" 2> "$work/mock.err" &
pids+=($!)
for _ in $(seq 100); do
    grep -q '^bootstrap: ' "$work/mock.out" 2> /dev/null && break
    sleep 0.05
done
bootstrap=$(sed -n 's/^bootstrap: //p' "$work/mock.out")
[ -n "$bootstrap" ] || { echo "kafka-mock did not start" >&2; cat "$work/mock.err" >&2; exit 1; }

# measure NAME TOPIC INPUT PID [METRICS_URL SINK_ID]: writes, consumes and
# samples one tool that already tails INPUT into TOPIC.
measure() {
    local name=$1 topic=$2 input=$3 pid=$4 url=${5:-} sink=${6:-}
    local start window_start window_end deadline consumer sampler writer
    start=$(( $(now_ns) + 1500000000 ))
    window_start=$(python3 -c "print($start + int($warmup * 1e9))")
    window_end=$(python3 -c "print($start + int($secs * 1e9))")
    deadline=$(python3 -c "print($window_end + int($drain * 1e9))")
    python3 "$perf/steady_consumer.py" "$bootstrap" "$topic" "$(python3 -c "print(int($rate * $secs))")" \
        "$window_start" "$window_end" "$deadline" "$work/$name.writer.json" "$work/$name.ready" \
        "$work/$name.consumer.json" &
    consumer=$!
    pids+=("$consumer")
    python3 "$perf/steady_sampler.py" "$pid" "$window_start" "$window_end" "$work/$name.sampler.json" \
        ${url:+"$url" "$sink"} &
    sampler=$!
    pids+=("$sampler")
    # In the background, so that a signal reaches the traps at once.
    python3 "$perf/steady_writer.py" "$input" "$rate" "$secs" "$start" "$warmup" "$work/$name.writer.json" &
    writer=$!
    pids+=("$writer")
    wait "$writer"
    [ -e "$work/$name.ready" ] || echo "$name: the consumer was late to join (it reads from the beginning)" >&2
    wait "$sampler" || echo "$name: the sampler failed" >&2
    wait "$consumer" || echo "$name: the consumer failed" >&2
    kill -0 "$pid" 2> /dev/null || echo "$name: the process exited during the run" >&2
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "steady: $rate lines/s for $secs s, 120-byte lines, window after a ${warmup} s warm-up; kafka-mock at $bootstrap"
[ ${#overrides[@]} -eq 0 ] || printf 'log-capturer override: %s\n' "${overrides[@]}"
tools=()

# log-capturer
mkdir -p "$work/lc/data"
: > "$work/lc/input.log"
python3 "$perf/steady_config.py" "$work/lc/config.toml" "$work/lc/data" "$work/lc/input.log" \
    "$bootstrap" steady "${overrides[@]}"
LOG_CAPTURER_LOG=info "$binary" run --config "$work/lc/config.toml" 2> "$work/lc/daemon.log" &
daemon=$!
pids+=("$daemon")
metrics=
for _ in $(seq 200); do
    metrics=$(sed -n 's/.* started .*metrics=\([^ ]*\).*/\1/p' "$work/lc/daemon.log" | head -1)
    [ -n "$metrics" ] && break
    kill -0 "$daemon" 2> /dev/null || break
    sleep 0.05
done
if [ -z "$metrics" ]; then
    echo "log-capturer did not start:" >&2
    cat "$work/lc/daemon.log" >&2
    exit 1
fi
for _ in $(seq 100); do
    curl -sf "http://$metrics/health" > /dev/null && break
    sleep 0.1
done
measure log-capturer steady "$work/lc/input.log" "$daemon" "http://$metrics/metrics" kafka
stop "$daemon"
tools+=(log-capturer)
if grep -E ' (WARN|ERROR) ' "$work/lc/daemon.log" > /dev/null; then
    echo "log-capturer logged warnings or errors:" >&2
    grep -E ' (WARN|ERROR) ' "$work/lc/daemon.log" | head -5 >&2
fi

# rsyslog
omkafka=$(ls /usr/lib/*/rsyslog/omkafka.so /usr/lib/rsyslog/omkafka.so 2> /dev/null | head -1 || true)
if [ "${STEADY_RSYSLOG:-1}" != 0 ] && command -v rsyslogd > /dev/null && [ -n "$omkafka" ]; then
    sleep 2
    mkdir -p "$work/rs/work"
    : > "$work/rs/input.log"
    cat > "$work/rs/rsyslog.conf" <<CONF
global(workDirectory="$work/rs/work")
module(load="imfile" mode="inotify")
module(load="omkafka")
template(name="message" type="string" string="%msg%")
input(type="imfile" file="$work/rs/input.log" tag="steady" ruleset="kafka")
ruleset(name="kafka") {
    action(type="omkafka" broker=["$bootstrap"] topic="steady-rsyslog"
           template="message" confParam=["compression.codec=lz4"])
}
CONF
    echo "rsyslog: $(rsyslogd -v | head -1 | awk '{print $1, $2}'), imfile (inotify) -> omkafka"
    rsyslogd -n -f "$work/rs/rsyslog.conf" -i "$work/rs/rsyslogd.pid" > "$work/rs/rsyslog.log" 2>&1 &
    rsyslog=$!
    pids+=("$rsyslog")
    # rsyslog has no readiness signal: give imfile time to set its watch.
    sleep 2
    if ! kill -0 "$rsyslog" 2> /dev/null; then
        echo "rsyslogd did not start:" >&2
        cat "$work/rs/rsyslog.log" >&2
        exit 1
    fi
    measure rsyslog steady-rsyslog "$work/rs/input.log" "$rsyslog"
    stop "$rsyslog"
    tools+=(rsyslog)
    if grep -qiE 'error|fail|warn' "$work/rs/rsyslog.log"; then
        echo "rsyslogd reported:" >&2
        grep -iE 'error|fail|warn' "$work/rs/rsyslog.log" | head -5 >&2
    fi
else
    echo "rsyslog: not measured (rsyslogd with omkafka not installed, or STEADY_RSYSLOG=0)"
fi
echo
python3 "$perf/steady_report.py" "$work" "${tools[@]}"
