#!/usr/bin/env python3
"""Samples a process over a measured window: CPU seconds, resident memory
and, for log-capturer, its own read->ack latency from /metrics.

steady_sampler.py PID WINDOW_START_NS WINDOW_END_NS REPORT.json \
    [METRICS_URL SINK_ID]

CPU is utime + stime of the whole process (every thread) from
/proc/PID/stat, read at the window's start and end, in CLK_TCK ticks. VmRSS
is read from /proc/PID/status at the start and every second after it until
the end. With METRICS_URL, the histogram
log_capturer_processing_duration_seconds{component="sink:SINK_ID",
operation="read_to_ack"} is read at the start and the end: the difference
gives the window's count, mean and (interpolated within buckets, as
Prometheus's histogram_quantile does) quantiles; the gauge
log_capturer_latency_seconds{sink=SINK_ID} (the daemon's percentiles over
its last completed 10-second window) is read with every RSS sample. The
histogram's buckets are coarse (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250 ms...):
its quantiles are given both interpolated and as the bucket holding them.
"""
import json
import os
import re
import statistics
import sys
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
BUCKET = re.compile(
    r'^log_capturer_processing_duration_seconds_bucket\{component="sink:([^"]+)",'
    r'operation="read_to_ack",le="([^"]+)"\} (\S+)$', re.M)
SUM_COUNT = re.compile(
    r'^log_capturer_processing_duration_seconds_(sum|count)\{component="sink:([^"]+)",'
    r'operation="read_to_ack"\} (\S+)$', re.M)
GAUGE = re.compile(
    r'^log_capturer_latency_seconds\{sink="([^"]+)",percentile="([^"]+)"\} (\S+)$', re.M)

def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14, stime 15.
    return int(fields[11]) + int(fields[12])

def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""

def histogram(text: str, sink: str):
    buckets = [(float(le), float(n)) for s, le, n in BUCKET.findall(text) if s == sink]
    totals = {kind: float(v) for kind, s, v in SUM_COUNT.findall(text) if s == sink}
    return sorted(buckets), totals.get("sum", 0.0), totals.get("count", 0.0)

def histogram_quantile(q: float, buckets) -> float:
    """buckets: [(upper bound, cumulative count)], sorted, +Inf last."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0)
        lower, below = upper, cumulative
    return lower

def histogram_bucket(q: float, buckets):
    """The bounds (lower, upper] of the bucket holding quantile q."""
    total = buckets[-1][1]
    lower = 0.0
    for upper, cumulative in buckets:
        if cumulative >= q * total:
            return lower, upper
        lower = upper
    return lower, float("inf")

def gauge(text: str, sink: str):
    return {p: float(v) * 1e3 for s, p, v in GAUGE.findall(text) if s == sink}

def sleep_until(ns: int) -> None:
    pause = (ns - time.time_ns()) / 1e9
    if pause > 0:
        time.sleep(pause)

def main() -> None:
    pid = int(sys.argv[1])
    start, end = int(sys.argv[2]), int(sys.argv[3])
    report_path = sys.argv[4]
    url = sys.argv[5] if len(sys.argv) > 5 else None
    sink = sys.argv[6] if len(sys.argv) > 6 else None
    sleep_until(start)
    ticks_start = cpu_ticks(pid)
    wall_start = time.time_ns()
    first = scrape(url) if url else ""
    rss = []
    gauges = []
    tick = start
    while True:
        rss.append(status_kib(pid, "VmRSS"))
        if url and tick > start:
            sample = gauge(scrape(url), sink)
            if sample:
                gauges.append(sample)
        tick += 1_000_000_000
        if tick >= end:
            break
        sleep_until(tick)
    sleep_until(end)
    ticks_end = cpu_ticks(pid)
    wall_end = time.time_ns()
    rss.append(status_kib(pid, "VmRSS"))
    last = scrape(url) if url else ""
    report = {
        "cpu_seconds": (ticks_end - ticks_start) / CLK_TCK,
        "window_secs": (wall_end - wall_start) / 1e9,
        "rss_median_mib": statistics.median(rss) / 1024,
        "rss_max_mib": max(rss) / 1024,
        "rss_samples": len(rss),
        "hwm_mib": status_kib(pid, "VmHWM") / 1024,
    }
    if url:
        before, sum0, count0 = histogram(first, sink)
        after, sum1, count1 = histogram(last, sink)
        if after and len(before) == len(after) and count1 > count0:
            window = [(le, n1 - n0) for (le, n0), (_, n1) in zip(before, after)]
            report["metrics_histogram"] = {
                "count": count1 - count0,
                "mean_ms": (sum1 - sum0) / (count1 - count0) * 1e3,
                "p50_ms": histogram_quantile(0.50, window) * 1e3,
                "p90_ms": histogram_quantile(0.90, window) * 1e3,
                "p99_ms": histogram_quantile(0.99, window) * 1e3,
                "p50_bucket_ms": [b * 1e3 for b in histogram_bucket(0.50, window)],
                "p90_bucket_ms": [b * 1e3 for b in histogram_bucket(0.90, window)],
                "p99_bucket_ms": [b * 1e3 for b in histogram_bucket(0.99, window)],
                "buckets": window,
            }
        if gauges:
            report["metrics_gauge_last"] = gauges[-1]
            report["metrics_gauge_p99_max"] = max(g.get("99", 0.0) for g in gauges)
    with open(report_path, "w") as out:
        json.dump(report, out)

if __name__ == "__main__":
    main()
