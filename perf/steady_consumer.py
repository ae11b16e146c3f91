#!/usr/bin/env python3
"""Reads a Kafka topic live through kcat and measures, per line written by
perf/steady_writer.py, the latency from its write to its arrival here.

steady_consumer.py BOOTSTRAP TOPIC TOTAL WINDOW_START_NS WINDOW_END_NS \
    DEADLINE_NS WRITER_REPORT.json READY_FILE REPORT.json

Starts `kcat -C -u -q` on every partition of TOPIC from the beginning (the
topic is fresh: it holds only this run's lines) and touches READY_FILE once
kcat had half a second to join. kcat runs with fetch.wait.max.ms=1: the
librdkafka mock broker holds a fetch that finds no data for the whole
fetch.wait.max.ms (500 ms by default) instead of answering when data comes,
which would add up to that much to the latency of a line written after a
pause; and with queued.min.messages=10000000: with the default (100000),
librdkafka 2.0 stops fetching once that many messages wait for kcat and
resumes only after a back-off, which caps kcat near 150,000 messages/s when
its unbuffered output (-u, needed to see each line as it comes) is slower
than the fetches.

kcat's output is read in chunks as it comes, at most every 0.5 ms; every
line of a chunk is stamped with the time.time_ns() at which the chunk was
read (so up to 0.5 ms late). The writer
stamps all the lines of one write(2) with one time, so lines are counted per
write stamp (in C, with Counter), and the Python work per chunk is per
stamp, not per line. Lines that are not the writer's (not 119 bytes, no
stamp) are counted and skipped. Latency is recorded for lines whose write
time falls in [WINDOW_START_NS, WINDOW_END_NS), in a histogram of 10 us
buckets up to 1 s and 1 ms buckets up to 120 s (the maximum is kept
exactly).

Stops when TOTAL lines arrived and, per write stamp, as many as the writer
reported (WRITER_REPORT's "groups"), at DEADLINE_NS, or on SIGTERM. The
missing and duplicate counts come from that comparison (a line missing and
another duplicated in the same write would cancel out).
"""
import fcntl
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from operator import itemgetter

WRITER_LINE = 119  # bytes without the newline
STAMP = itemgetter(slice(2, 21))
# Latency histogram: 10 us buckets up to 1 s, then 1 ms buckets up to
# 120 s, then one bucket for everything above.
FINE_NS, FINE = 10_000, 100_000
COARSE_NS, COARSE = 1_000_000, 119_000
BUCKETS = FINE + COARSE
READ_GAP_NS = 500_000
F_SETPIPE_SZ = 1031

stop = False

def on_term(_signum, _frame) -> None:
    global stop
    stop = True

def bucket(latency_ns: int) -> int:
    if latency_ns < FINE * FINE_NS:
        return max(0, latency_ns // FINE_NS)
    return min(BUCKETS, FINE + (latency_ns - FINE * FINE_NS) // COARSE_NS)

def upper_bound_ms(index: int) -> float:
    if index < FINE:
        return (index + 1) * FINE_NS / 1e6
    return (FINE * FINE_NS + (index - FINE + 1) * COARSE_NS) / 1e6

def quantile(histogram, count, q):
    """The upper bound of the bucket holding quantile q, in ms (the last
    bucket, above 120 s, gives None: the maximum says how far)."""
    if count == 0:
        return None
    rank = max(1, int(q * count + 0.999999))
    seen = 0
    for index, n in enumerate(histogram):
        if n:
            seen += n
            if seen >= rank:
                return upper_bound_ms(index) if index < BUCKETS else None
    return None

def load_groups(path):
    try:
        with open(path) as f:
            return {stamp: lines for stamp, lines in json.load(f)["groups"]}
    except (OSError, ValueError, KeyError):
        return None

def compare(expected, got):
    missing = duplicates = 0
    for stamp, lines in expected.items():
        n = got.get(stamp, 0)
        if n < lines:
            missing += lines - n
        else:
            duplicates += n - lines
    unknown = sum(n for stamp, n in got.items() if stamp not in expected)
    return missing, duplicates, unknown

def main() -> None:
    bootstrap, topic = sys.argv[1], sys.argv[2]
    total = int(sys.argv[3])
    window_start, window_end = int(sys.argv[4]), int(sys.argv[5])
    deadline = int(sys.argv[6])
    writer_report, ready_path, report_path = sys.argv[7], sys.argv[8], sys.argv[9]
    signal.signal(signal.SIGTERM, on_term)
    kcat = subprocess.Popen(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning",
         "-u", "-q", "-f", "%s\n", "-X", "fetch.wait.max.ms=1",
         "-X", "queued.min.messages=10000000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    fd = kcat.stdout.fileno()
    try:
        # Room for kcat to go on writing while this reads every READ_GAP_NS.
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    os.set_blocking(fd, False)
    got = Counter()  # lines per write stamp
    consumed = 0
    foreign = 0
    histogram = [0] * (BUCKETS + 1)
    in_window = 0
    latency_sum = 0
    latency_max = 0
    expected = None
    complete = False
    last_arrival = None
    pending = b""
    # kcat prints nothing until data comes; a short pause lets it join.
    time.sleep(0.5)
    with open(ready_path, "w"):
        pass
    while not stop:
        now = time.time_ns()
        if now >= deadline:
            break
        if consumed >= total:
            if expected is None:
                expected = load_groups(writer_report)
            if expected is not None and compare(expected, got)[0] == 0:
                complete = True
                break
        readable, _, _ = select.select([fd], [], [], min(0.2, (deadline - now) / 1e9))
        if not readable:
            if kcat.poll() is not None:
                break
            continue
        arrival = time.time_ns()
        try:
            chunk = os.read(fd, 4 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        pending = data[cut:]
        lines = data[:cut].split(b"\n")
        lines.pop()  # the empty piece after the last newline
        lengths = Counter(map(len, lines))
        ok = lengths.pop(WRITER_LINE, 0)
        foreign += sum(lengths.values())
        if lengths:
            lines = [line for line in lines if len(line) == WRITER_LINE]
        for stamp, n in Counter(map(STAMP, lines)).items():
            try:
                t = int(stamp)
            except ValueError:
                foreign += n
                ok -= n
                continue
            got[t] += n
            if window_start <= t < window_end:
                latency = arrival - t
                in_window += n
                latency_sum += latency * n
                if latency > latency_max:
                    latency_max = latency
                histogram[bucket(latency)] += n
        consumed += ok
        if ok:
            last_arrival = arrival
        # Read at most every READ_GAP_NS: reading each of kcat's writes as
        # it comes (two per message with -u) costs a wake-up each, more CPU
        # than the tools measured at high rates. Lines that come during the
        # gap are stamped up to that much late.
        pause = arrival + READ_GAP_NS - time.time_ns()
        if pause > 0:
            time.sleep(pause / 1e9)
    kcat.terminate()
    try:
        kcat.wait(timeout=5)
    except subprocess.TimeoutExpired:
        kcat.kill()
        kcat.wait()
    if expected is None and not stop:
        for _ in range(50):
            expected = load_groups(writer_report)
            if expected is not None:
                break
            time.sleep(0.1)
    missing, duplicates, unknown = compare(expected or {}, got)
    own = resource.getrusage(resource.RUSAGE_SELF)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "expected": total,
        "consumed": consumed,
        "complete": complete,
        "missing": missing if expected is not None else None,
        "duplicates": duplicates if expected is not None else None,
        "unknown_stamps": unknown,
        "foreign_lines": foreign,
        "latency_lines": in_window,
        "latency_ms": {
            "p50": quantile(histogram, in_window, 0.50),
            "p90": quantile(histogram, in_window, 0.90),
            "p99": quantile(histogram, in_window, 0.99),
            "p99.9": quantile(histogram, in_window, 0.999),
            "max": latency_max / 1e6 if in_window else None,
            "mean": latency_sum / in_window / 1e6 if in_window else None,
        },
        "last_arrival_ns": last_arrival,
        "consumer_cpu_seconds": own.ru_utime + own.ru_stime,
        "kcat_cpu_seconds": child.ru_utime + child.ru_stime,
    }
    with open(report_path, "w") as out:
        json.dump(report, out)

if __name__ == "__main__":
    main()
