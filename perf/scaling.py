#!/usr/bin/env python3
"""Scaling curves of the release binary at steady rates: CPU seconds per
million lines and RSS against the rate, the number of followed files and
the line length, file -> Kafka (`kafka-mock`, 4 partitions, raw, lz4, every
other key at its default).

    perf/scaling.py [--secs S] [--quick] OUT.json [OUT.svg]
    perf/scaling.py --replot OUT.json OUT.svg     draws a run again

For each point a fresh daemon tails a glob over N files in a fresh
directory while a writer appends lines of L bytes at R lines/s in all, a
write every millisecond to the next file in turn (so each of 1,000 files
gets a write of 50 lines a second at 50k lines/s). After a warm-up of a
quarter of the run (at least 3 s), CPU (utime + stime of the whole
process, /proc/PID/stat) and RSS (VmRSS, a sample a second, median) are
taken over the rest. The daemon must have read every line written (its
`log_capturer_source_lines_read_total`) before the next point starts, or
the point is marked behind.

Curves (each point one run; the machine is shared, so read the shape):
  rate:   5k, 20k, 50k, 100k, 200k, 500k lines/s; 1 file; 120-byte lines
  files:  1, 10, 100, 1,000 files; 50k lines/s in all; 120-byte lines
  length: 64, 256, 1,024, 4,096-byte lines at 6 MB/s (50k x 120 B);
          CPU per million lines and per GB

The SVG (matplotlib) draws the three curves. LOG_CAPTURER_BINARY picks
another build; otherwise target/release/log-capturer, built first.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
BYTES_PER_SECOND = 50_000 * 120


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def lines_read(url: str) -> int:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return int(sum(float(value) for value in re.findall(
        r"^log_capturer_source_lines_read_total\{[^}]*\} (\S+)$", body, re.M)))


def write_lines(files: list, rate: int, line_bytes: int, secs: float, on_tick) -> int:
    """Appends rate x secs lines of line_bytes, a write per millisecond to
    the next file in turn; calls on_tick(elapsed_s) between writes."""
    line = b"x" * (line_bytes - 1) + b"\n"
    total = int(rate * secs)
    written = 0
    turn = 0
    start = time.monotonic()
    while written < total:
        elapsed = time.monotonic() - start
        due = min(total, int(elapsed * rate) + 1)
        if due > written:
            os.write(files[turn % len(files)], line * (due - written))
            written = due
            turn += 1
        on_tick(elapsed)
        time.sleep(0.001)
    return written


def run_point(binary: str, bootstrap: str, rate: int, file_count: int,
              line_bytes: int, secs: float) -> dict:
    work = tempfile.mkdtemp(prefix="scaling-")
    try:
        logs = os.path.join(work, "logs")
        os.makedirs(logs)
        paths = [os.path.join(logs, f"f{index:04d}.log") for index in range(file_count)]
        for path in paths:
            open(path, "w").close()
        config = os.path.join(work, "config.toml")
        with open(config, "w") as out:
            out.write(f"""[daemon]
data_dir = "{work}/data"
metrics_addr = "127.0.0.1:0"

[sources.scaling]
type = "file"
paths = ["{logs}/*.log"]
max_files = {max(file_count, 64)}

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "scaling"
encoding = "raw"
""")
        log_path = os.path.join(work, "daemon.log")
        log = open(log_path, "w")
        daemon = subprocess.Popen([binary, "run", "--config", config], stderr=log,
                                  env={**os.environ, "LOG_CAPTURER_LOG": "info"})
        try:
            metrics = None
            for _ in range(200):
                text = open(log_path).read()
                found = re.search(r" started .*metrics=(\S+)", text)
                if found:
                    metrics = f"http://{found.group(1)}/metrics"
                    break
                time.sleep(0.05)
            if metrics is None:
                raise RuntimeError(f"daemon did not start: {open(log_path).read()}")
            time.sleep(2.5)  # every file found, start-up pages released
            files = [os.open(path, os.O_WRONLY | os.O_APPEND) for path in paths]
            warmup = max(3.0, secs / 4)
            state = {"cpu0": None, "rss": [], "next": warmup}

            def on_tick(elapsed: float) -> None:
                if elapsed >= state["next"]:
                    if state["cpu0"] is None:
                        state["cpu0"] = (cpu_seconds(daemon.pid), elapsed)
                    state["rss"].append(rss_mib(daemon.pid))
                    state["next"] += 1.0

            written = write_lines(files, rate, line_bytes, secs, on_tick)
            cpu1 = cpu_seconds(daemon.pid)
            for fd in files:
                os.close(fd)
            cpu0, at = state["cpu0"]
            window_lines = rate * (secs - at)
            deadline = time.monotonic() + 30
            read = lines_read(metrics)
            while read < written and time.monotonic() < deadline:
                time.sleep(0.2)
                read = lines_read(metrics)
            return {
                "rate": rate, "files": file_count, "line_bytes": line_bytes,
                "lines_written": written, "lines_read": read,
                "behind": read < written,
                "cpu_s_per_million": (cpu1 - cpu0) / window_lines * 1e6,
                "cpu_s_per_gb": (cpu1 - cpu0) / (window_lines * line_bytes) * 1e9,
                "rss_median_mib": statistics.median(state["rss"]),
                "rss_max_mib": max(state["rss"]),
            }
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plot(results: dict, out_svg: str) -> None:
    import matplotlib
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    curves = [("rate", "rate", "lines/s (1 file, 120 B)", True),
              ("files", "files", "followed files (50k lines/s in all)", True),
              ("length", "line_bytes", "line length, bytes (6 MB/s)", True)]
    for column, (name, key, label, log_x) in enumerate(curves):
        points = results[name]
        xs = [point[key] for point in points]
        cpu = [point["cpu_s_per_million"] for point in points]
        rss = [point["rss_median_mib"] for point in points]
        top, bottom = axes[0][column], axes[1][column]
        top.plot(xs, cpu, "o-")
        if name == "length":
            twin = top.twinx()
            twin.plot(xs, [point["cpu_s_per_gb"] for point in points], "s--", color="gray")
            twin.set_ylabel("CPU-s per GB (dashed)")
            twin.set_ylim(bottom=0)
        top.set_ylabel("CPU-s per million lines")
        bottom.plot(xs, rss, "o-", color="tab:green")
        bottom.set_ylabel("RSS median, MiB")
        bottom.set_ylim(bottom=0)
        top.set_ylim(bottom=0)
        bottom.set_xlabel(label)
        for axis in (top, bottom):
            if log_x:
                axis.set_xscale("log")
            axis.grid(True, alpha=0.3)
    figure.suptitle("log-capturer file -> Kafka (mock), steady rates")
    figure.tight_layout()
    figure.savefig(out_svg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_json")
    parser.add_argument("out_svg", nargs="?")
    parser.add_argument("--secs", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="two points per curve")
    parser.add_argument("--replot", action="store_true", help="draw OUT.json into OUT.svg")
    arguments = parser.parse_args()
    if arguments.replot:
        with open(arguments.out_json) as results:
            plot(json.load(results), arguments.out_svg)
        return
    binary = os.environ.get("LOG_CAPTURER_BINARY")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        os.path.join(ROOT, "Cargo.toml")], check=True)
        binary = os.path.join(ROOT, "target", "release", "log-capturer")
    curves = {
        "rate": [(rate, 1, 120) for rate in (5_000, 20_000, 50_000, 100_000, 200_000, 500_000)],
        "files": [(50_000, count, 120) for count in (1, 10, 100, 1_000)],
        "length": [(BYTES_PER_SECOND // length, 1, length) for length in (64, 256, 1_024, 4_096)],
    }
    if arguments.quick:
        curves = {name: [points[0], points[-1]] for name, points in curves.items()}
    mock = subprocess.Popen([binary, "kafka-mock", "--topic", "scaling:4"],
                            stdout=subprocess.PIPE, text=True)
    try:
        bootstrap = None
        for line in mock.stdout:
            if line.startswith("bootstrap: "):
                bootstrap = line.split(": ", 1)[1].strip()
                break
        if bootstrap is None:
            sys.exit("kafka-mock did not start")
        results = {}
        for name, points in curves.items():
            results[name] = []
            for rate, files, length in points:
                point = run_point(binary, bootstrap, rate, files, length, arguments.secs)
                results[name].append(point)
                print(f"{name:6} rate {rate:>7} files {files:>5} line {length:>5} B: "
                      f"{point['cpu_s_per_million']:.3f} CPU-s/M, {point['cpu_s_per_gb']:.2f} CPU-s/GB, "
                      f"RSS {point['rss_median_mib']:.1f} MiB (max {point['rss_max_mib']:.1f})"
                      f"{'  BEHIND' if point['behind'] else ''}", flush=True)
    finally:
        mock.terminate()
        mock.wait()
    with open(arguments.out_json, "w") as out:
        json.dump(results, out, indent=1)
    if arguments.out_svg:
        plot(results, arguments.out_svg)
        print(f"wrote {arguments.out_svg}")


if __name__ == "__main__":
    main()
