#!/usr/bin/env bash
# An idle daemon: a file source on a file nobody writes, a file sink. After
# a settling time, prints the CPU the whole process used over SECS seconds
# (utime + stime from /proc/PID/stat, in clock ticks and in % of one core;
# and the time its threads ran by the scheduler's own clock, the first field
# of each /proc/PID/task/*/schedstat, which is exact where ticks are charged
# to whoever runs when the tick comes),
# its RSS, and each thread's voluntary context switches per second (its
# wake-ups).
#
#   perf/idle.sh [SECS]        (default 60)
#
# LOG_CAPTURER_BINARY measures another build.
set -euo pipefail
secs=${1:-60}
settle=${IDLE_SETTLE:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${LOG_CAPTURER_BINARY:-}" ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
fi
binary=${LOG_CAPTURER_BINARY:-$root/target/release/log-capturer}
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null && wait "$pid" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
echo "a quiet line" > "$work/quiet.log"
cat > "$work/config.toml" <<TOML
[daemon]
metrics_addr = "127.0.0.1:0"
data_dir = "$work/data"

[sources.quiet]
type = "file"
paths = ["$work/quiet.log"]

[sinks.out]
type = "file"
path = "$work/out.log"
TOML
"$binary" run --config "$work/config.toml" > "$work/daemon.log" 2>&1 &
pid=$!
sleep "$settle"
kill -0 "$pid" || { cat "$work/daemon.log" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
switches() {
    local task
    for task in /proc/"$pid"/task/*; do
        printf '%s %s\n' "$(tr ' ' '_' < "$task/comm")" \
            "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")"
    done
}
# Threads of the daemon do not come and go while it is idle.
ran_ns() { cat /proc/"$pid"/task/*/schedstat | awk '{sum += $1} END {print sum}'; }
hz=$(getconf CLK_TCK)
ran_before=$(ran_ns)
before=$(ticks)
switches > "$work/switches.before"
sleep "$secs"
after=$(ticks)
ran_after=$(ran_ns)
switches > "$work/switches.after"
used=$((after - before))
echo "idle for ${secs} s: ${used} ticks of ${hz}/s ($(python3 -c "print(f'{100 * $used / $hz / $secs:.3f}')")% of one core)"
echo "ran (schedstat): $(python3 -c "print(f'{($ran_after - $ran_before) / 1e6:.1f} ms, {100 * ($ran_after - $ran_before) / 1e9 / $secs:.3f}% of one core')")"
echo "RSS: $(awk '/^VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$pid/status")"
echo "wake-ups per second, by thread:"
paste "$work/switches.before" "$work/switches.after" |
    awk -v secs="$secs" '{printf "  %-16s %6.1f\n", $1, ($4 - $2) / secs}'
