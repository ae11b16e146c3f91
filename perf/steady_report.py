#!/usr/bin/env python3
"""Prints the figures perf/steady.sh collected, one column per tool, and the
ratio of the first tool's figure to each other's.

steady_report.py WORK_DIR NAME...

Reads NAME.writer.json, NAME.consumer.json and NAME.sampler.json from
WORK_DIR for each NAME (as written by steady_writer.py, steady_consumer.py
and steady_sampler.py).
"""
import json
import os
import sys

def load(work: str, name: str) -> dict:
    figures = {}
    for part in ("writer", "consumer", "sampler"):
        path = os.path.join(work, f"{name}.{part}.json")
        try:
            with open(path) as f:
                figures[part] = json.load(f)
        except (OSError, ValueError):
            figures[part] = {}
    return figures

def rows(f: dict):
    w, c, s = f["writer"], f["consumer"], f["sampler"]
    lat = c.get("latency_ms", {})
    window_lines = w.get("lines_in_window") or 0
    cpu = s.get("cpu_seconds")
    per_million = cpu / window_lines * 1e6 if cpu is not None and window_lines else None
    hist = s.get("metrics_histogram", {})
    gauge = s.get("metrics_gauge_last", {})
    # The daemon's gauge: percentiles over its last completed 10 s window
    # when the measured window ended; "max" is the largest p99 it showed
    # during the window.
    return [
        ("lines written", w.get("lines"), "d"),
        ("writer rate, lines/s", w.get("achieved_rate"), ",.0f"),
        ("writer most behind, ms", w.get("max_behind_ms"), ".1f"),
        ("lines consumed", c.get("consumed"), "d"),
        ("lines missing", c.get("missing"), "d"),
        ("duplicates", c.get("duplicates"), "d"),
        ("last line read, s after last write", caught_up(w, c), ".2f"),
        ("lines in window", window_lines, "d"),
        ("CPU s in window", cpu, ".2f"),
        ("CPU s per million lines", per_million, ".3f"),
        ("RSS median, MiB", s.get("rss_median_mib"), ".1f"),
        ("RSS max, MiB", s.get("rss_max_mib"), ".1f"),
        ("RSS peak (VmHWM), MiB", s.get("hwm_mib"), ".1f"),
        ("latency p50, ms", lat.get("p50"), ".2f"),
        ("latency p90, ms", lat.get("p90"), ".2f"),
        ("latency p99, ms", lat.get("p99"), ".2f"),
        ("latency p99.9, ms", lat.get("p99.9"), ".2f"),
        ("latency max, ms", lat.get("max"), ".2f"),
        ("latency mean, ms", lat.get("mean"), ".2f"),
        ("consumer CPU s (python, kcat)", pair(c.get("consumer_cpu_seconds"), c.get("kcat_cpu_seconds")), "s"),
        ("read->ack mean (hist), ms", hist.get("mean_ms"), ".2f"),
        ("read->ack p50 (hist bucket), ms", bucket(hist.get("p50_bucket_ms")), "s"),
        ("read->ack p90 (hist bucket), ms", bucket(hist.get("p90_bucket_ms")), "s"),
        ("read->ack p99 (hist bucket), ms", bucket(hist.get("p99_bucket_ms")), "s"),
        ("read->ack p50 (gauge), ms", gauge.get("50"), ".2f"),
        ("read->ack p99 (gauge), ms", gauge.get("99"), ".2f"),
        ("read->ack p99.9 (gauge), ms", gauge.get("99.9"), ".2f"),
        ("read->ack p99 (gauge, max), ms", s.get("metrics_gauge_p99_max"), ".2f"),
    ]

def caught_up(w, c):
    """How long after the writer's last write the consumer read the last
    line: near 0 when the tool kept up, the backlog it had otherwise."""
    if w.get("end_ns") is None or c.get("last_arrival_ns") is None:
        return None
    return (c["last_arrival_ns"] - w["end_ns"]) / 1e9

def pair(a, b):
    if a is None or b is None:
        return None
    return f"{a:.1f}, {b:.1f}"

def bucket(bounds):
    if not bounds:
        return None
    lower, upper = bounds
    return f"{lower:g}-{upper:g}"

def cell(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)

def main() -> None:
    work, names = sys.argv[1], sys.argv[2:]
    tables = {name: rows(load(work, name)) for name in names}
    first = names[0]
    header = ["", *names] + [f"{first}/{n}" for n in names[1:]]
    out = []
    for i, (label, _, fmt) in enumerate(tables[first]):
        values = [tables[n][i][1] for n in names]
        line = [label, *(cell(v, fmt) for v in values)]
        for v in values[1:]:
            numbers = isinstance(values[0], (int, float)) and isinstance(v, (int, float))
            ratio = values[0] / v if numbers and v else None
            line.append("-" if ratio is None else f"{ratio:.2f}")
        out.append(line)
    widths = [max(len(r[i]) for r in out + [header]) for i in range(len(header))]
    for r in [header] + out:
        print("  ".join(
            r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
            for i in range(len(r))).rstrip())
    for name in names:
        w = load(work, name)["writer"]
        if w and not w.get("kept_rate"):
            print(f"warning: the writer did not keep the rate for {name}: "
                  f"{w.get('achieved_rate', 0):,.0f} lines/s, "
                  f"up to {w.get('max_behind_ms', 0):.0f} ms behind schedule")
        c = load(work, name)["consumer"]
        if c.get("foreign_lines"):
            print(f"warning: {c['foreign_lines']} lines in the topic were not the writer's for {name}")
        if c.get("missing"):
            print(f"warning: {c['missing']} lines never reached the topic for {name}")

if __name__ == "__main__":
    main()
