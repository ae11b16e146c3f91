#!/usr/bin/env python3
"""CPU and memory of one file source against the number of files it follows.

many_files.py BINARY FILES flat LINES
    FILES files holding LINES lines (~120 bytes) in total, read from their
    start to their end (`exit_on_eof`) into a null sink: lines/s, CPU
    seconds per million lines, peak RSS.

many_files.py BINARY FILES rate LINES_PER_SECOND SECONDS
    A writer appends LINES_PER_SECOND lines in total, spread over FILES
    files (10 ms ticks), for SECONDS; the daemon follows them into a null
    sink. Prints CPU seconds per million lines (daemon only) and its RSS at
    steady state (median of the samples of the second half) and peak.

Positions are on (the default) in both modes.
"""
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

PADDING = "x" * 103


def config(work: str, files: int, exit_on_eof: bool, port: int) -> str:
    return f"""
[daemon]
pin_threads = true
data_dir = "{work}/data"
metrics_addr = "127.0.0.1:{port}"

[sources.bench]
type = "file"
paths = ["{work}/in/*.log"]
{"" if os.environ.get("NO_MAX_FILES") else f"max_files = {max(files, 1024)}"}
exit_on_eof = {"true" if exit_on_eof else "false"}

[sinks.drop]
type = "null"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        match = re.search(r"VmRSS:\s+(\d+) kB", status.read())
    return int(match.group(1)) / 1024 if match else 0.0


def lines_read(port: int) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := conn.recv(65536):
                body += chunk
    except OSError:
        return -1
    match = re.search(rb"log_capturer_source_lines_read_total\{[^}]*\} (\d+)", body)
    return int(match.group(1)) if match else -1


def flat(binary: str, files: int, lines: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        os.mkdir(f"{work}/in")
        per_file = lines // files
        for index in range(files):
            with open(f"{work}/in/f{index:05}.log", "w") as out:
                # In blocks, so that this process stays small: the daemon is
                # forked from it, and a forked child's peak RSS counts the
                # parent's pages until it execs.
                for start in range(0, per_file, 50_000):
                    end = min(start + 50_000, per_file)
                    out.write("".join(f"seq={n:012} {PADDING}\n" for n in range(start, end)))
        with open(f"{work}/config.toml", "w") as out:
            out.write(config(work, files, True, 0))
        started = time.monotonic()
        subprocess.run([binary, "run", "--config", f"{work}/config.toml"],
                       check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "LOG_CAPTURER_LOG": "warn"})
        wall = time.monotonic() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        total = per_file * files
        print(f"files={files} mode=flat lines={total} lines/s={total / wall:,.0f} "
              f"cpu_s_per_M={cpu / total * 1e6:.3f} peak_rss_mib={usage.ru_maxrss / 1024:.1f}")


def rate(binary: str, files: int, per_second: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as work:
        os.mkdir(f"{work}/in")
        handles = [os.open(f"{work}/in/f{index:05}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                   for index in range(files)]
        port = free_port()
        with open(f"{work}/config.toml", "w") as out:
            out.write(config(work, files, False, port))
        daemon = subprocess.Popen([binary, "run", "--config", f"{work}/config.toml"],
                                  stdout=subprocess.DEVNULL,
                                  env={**os.environ, "LOG_CAPTURER_LOG": "warn"})
        while lines_read(port) < 0:
            time.sleep(0.05)
        cpu_start = cpu_seconds(daemon.pid)
        tick = 0.01
        per_tick = per_second * tick
        written, owed, next_file = 0, 0.0, 0
        samples = []
        next_sample = 0.5
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            owed += per_tick
            count = int(owed)
            owed -= count
            batches = {}
            for _ in range(count):
                batches.setdefault(next_file, []).append(f"seq={written:012} {PADDING}\n")
                written += 1
                next_file = (next_file + 1) % files
            for index, text in batches.items():
                os.write(handles[index], "".join(text).encode())
            if elapsed >= next_sample:
                samples.append((elapsed, rss_mib(daemon.pid)))
                next_sample += 0.5
            time.sleep(max(0.0, started + tick * (int(elapsed / tick) + 1) - time.monotonic()))
        deadline = time.monotonic() + 30
        while lines_read(port) < written and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = cpu_seconds(daemon.pid) - cpu_start
        daemon.terminate()
        daemon.wait(timeout=30)
        steady = sorted(rss for at, rss in samples if at >= seconds / 2)
        median = steady[len(steady) // 2] if steady else 0.0
        peak = max((rss for _, rss in samples), default=0.0)
        print(f"files={files} mode=rate lines={written} lines/s={written / seconds:,.0f} "
              f"cpu_s_per_M={cpu / written * 1e6:.3f} rss_steady_mib={median:.1f} rss_peak_mib={peak:.1f}")


def main() -> None:
    binary, files, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "flat":
        flat(binary, files, int(sys.argv[4]))
    else:
        rate(binary, files, int(sys.argv[4]), float(sys.argv[5]))


if __name__ == "__main__":
    main()
