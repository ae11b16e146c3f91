#!/usr/bin/env python3
"""Appends lines of 120 bytes to a file at a steady rate, each carrying its
write time, and reports whether the rate was kept.

steady_writer.py PATH RATE SECS START_NS WARMUP_SECS REPORT.json

Waits until START_NS (time.time_ns()), then every millisecond appends the
lines due by then in one write(2): `t=<ns> seq=<n> xxx...\n`, where <ns> is
the wall-clock time taken just before that write, zero-padded to 19 digits,
and <n> counts from 0, zero-padded to 12. RATE x SECS lines are written in
all; a writer that falls behind catches up, and the report says by how much
it was behind. The report also counts the lines written in the measured
window [START + WARMUP, START + SECS), and lists every write as [stamp,
lines]: a consumer counts the lines it got per stamp against it.
"""
import json
import os
import sys
import time

LINE_BYTES = 120
TICK_NS = 1_000_000

def main() -> None:
    path, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    start_ns, warmup = int(sys.argv[4]), float(sys.argv[5])
    report_path = sys.argv[6]
    total = int(rate * secs)
    window_start = start_ns + int(warmup * 1e9)
    window_end = start_ns + int(secs * 1e9)
    # "t=" 19 digits " seq=" 12 digits " " padding "\n" = 120 bytes.
    padding = "x" * (LINE_BYTES - 2 - 19 - 5 - 12 - 1 - 1)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pause = (start_ns - time.time_ns()) / 1e9
    if pause > 0:
        time.sleep(pause)
    written = 0
    in_window = 0
    max_behind_ns = 0
    ticks_behind_10ms = 0
    writes = 0
    per_second = [0] * (int(secs) + 1)
    groups = []  # [stamp, lines] per write: what the consumer must see
    next_tick = start_ns
    while written < total:
        now = time.time_ns()
        due = min(total, (now - start_ns) * rate // 1_000_000_000 + 1)
        if due > written:
            # How late the oldest line of this write is against its schedule.
            behind = now - (start_ns + written * 1_000_000_000 // rate)
            if behind > max_behind_ns:
                max_behind_ns = behind
            if behind > 10_000_000:
                ticks_behind_10ms += 1
            stamp = time.time_ns()
            head = f"t={stamp:019d} seq="
            tail = f" {padding}\n"
            data = "".join(f"{head}{n:012d}{tail}" for n in range(written, due)).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            writes += 1
            count = due - written
            groups.append([stamp, count])
            if window_start <= stamp < window_end:
                in_window += count
            second = min(len(per_second) - 1, max(0, (stamp - start_ns) // 1_000_000_000))
            per_second[second] += count
            written = due
        next_tick += TICK_NS
        pause = next_tick - time.time_ns()
        if pause > 0:
            time.sleep(pause / 1e9)
        elif pause < -TICK_NS:
            # Behind by more than a tick: no point sleeping, nor
            # accumulating ticks to replay.
            next_tick = time.time_ns()
    end_ns = time.time_ns()
    os.close(fd)
    elapsed = (end_ns - start_ns) / 1e9
    full_seconds = per_second[: int(secs)]
    report = {
        "rate": rate,
        "secs": secs,
        "lines": written,
        "bytes": written * LINE_BYTES,
        "lines_in_window": in_window,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "elapsed_secs": elapsed,
        "achieved_rate": written / elapsed if elapsed > 0 else 0.0,
        "max_behind_ms": max_behind_ns / 1e6,
        "ticks_behind_10ms": ticks_behind_10ms,
        "writes": writes,
        "min_lines_per_second": min(full_seconds) if full_seconds else 0,
        "max_lines_per_second": max(full_seconds) if full_seconds else 0,
        "groups": groups,
    }
    # Kept: the whole run took at most 1% (or 50 ms) longer than planned and
    # no write was more than 100 ms late.
    report["kept_rate"] = (
        elapsed <= secs * 1.01 + 0.05 and max_behind_ns <= 100_000_000
    )
    with open(report_path, "w") as out:
        json.dump(report, out)

if __name__ == "__main__":
    main()
