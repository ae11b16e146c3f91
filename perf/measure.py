#!/usr/bin/env python3
"""Runs a command and prints wall seconds, CPU seconds and peak RSS.

measure.py LINES -- COMMAND...   prints lines/s too, computed from LINES.
"""
import resource
import subprocess
import sys
import time

def main() -> None:
    separator = sys.argv.index("--")
    lines = int(sys.argv[1])
    command = sys.argv[separator + 1:]
    started = time.monotonic()
    completed = subprocess.run(command, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(f"command failed with exit code {completed.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    print(f"lines:          {lines}")
    print(f"wall seconds:   {wall:.3f}")
    print(f"lines/s:        {lines / wall:,.0f}")
    print(f"cpu seconds:    {cpu:.3f} (user {usage.ru_utime:.3f}, sys {usage.ru_stime:.3f})")
    print(f"peak RSS:       {usage.ru_maxrss / 1024:.1f} MiB")

if __name__ == "__main__":
    main()
