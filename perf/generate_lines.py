#!/usr/bin/env python3
"""Writes N numbered lines of about 120 bytes: generate_lines.py PATH N."""
import sys

def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    padding = "x" * 103
    with open(path, "w", buffering=1 << 20) as out:
        batch = 100_000
        for start in range(0, count, batch):
            end = min(start + batch, count)
            out.write("".join(f"seq={n:012} {padding}\n" for n in range(start, end)))

if __name__ == "__main__":
    main()
