#!/usr/bin/env python3
"""Syslog into this daemon and into rsyslog, side by side, on one machine.

    perf/syslog_peer.py tcp [MESSAGES]   default 2,000,000
    perf/syslog_peer.py udp [MESSAGES]   default 1,000,000

TCP: RFC 5424 messages with structured data (about 170 bytes), octet-
counted, pushed from a file with sendfile(2) by one connection, into
  * the daemon: syslog source (tcp) -> null sink, and
  * rsyslog: imtcp -> omfile (the message as received, one per line).
Each runs alone; the figures are wall seconds from the first byte sent to
the last message taken (the daemon's `log_capturer_logs_processed_total`,
rsyslog's output line count), messages/s, and the receiver's CPU seconds
per million messages (from /proc/PID/stat, start-up excluded).

UDP: the same messages as datagrams, sent with sendmmsg(2) by
perf/udp_flood.c (built with gcc), into the daemon's syslog source (udp)
-> null sink; prints messages/s taken and what
was dropped, by the daemon (`queue_full`) and by the kernel
(`kernel_drop`), which with the taken ones must add up to what was sent.

The daemon binary is target/release/log-capturer (built if missing), or
LOG_CAPTURER_BINARY. Needs rsyslogd for the TCP comparison.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def message(number: int) -> bytes:
    return (
        f'<165>1 2026-11-27T12:00:00.{number % 1000:03d}Z web{number % 16:02d}.example.net '
        f'opensips 4242 ID47 [origin@32473 ip="10.0.0.{number % 250}" software="opensips"]'
        f' call {number:09d} from sip:alice@example.net answered'
    ).encode()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def binary() -> str:
    path = os.environ.get("LOG_CAPTURER_BINARY") or os.path.join(ROOT, "target/release/log-capturer")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return path


def metrics(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return response.read().decode()


def sample(body: str, pattern: str) -> float:
    match = re.search(r"^" + pattern + r" (\S+)$", body, re.M)
    return float(match.group(1)) if match else 0.0


def start_daemon(work: str, source: str) -> tuple:
    metrics_port = free_port()
    config = os.path.join(work, "daemon.toml")
    with open(config, "w") as out:
        out.write(f"""
[daemon]
pin_threads = true
data_dir = "{work}/data"
metrics_addr = "127.0.0.1:{metrics_port}"

[sources.sys]
type = "syslog"
{source}

[sinks.drop]
type = "null"
""")
    env = dict(os.environ, LOG_CAPTURER_LOG="warn")
    child = subprocess.Popen([binary(), "run", "--config", config], env=env)
    address = f"127.0.0.1:{metrics_port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            metrics(address)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("the daemon did not start")
            time.sleep(0.05)
    return child, address


def taken(address: str) -> float:
    return sample(metrics(address), r'log_capturer_logs_processed_total\{[^}]*source_id="sys"[^}]*\}')


def send_file(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as connection, open(path, "rb") as frames:
        connection.sendfile(frames)


def report(name: str, count: int, wall: float, cpu: float, rss_kib: int) -> None:
    print(f"{name:<8} {count:>10,} msgs  {wall:7.3f} s  {count / wall:>12,.0f} msgs/s  "
          f"{cpu / count * 1e6:6.3f} CPU-s/M  RSS {rss_kib / 1024:6.1f} MiB")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tcp(count: int) -> None:
    work = tempfile.mkdtemp()
    try:
        frames = os.path.join(work, "frames")
        with open(frames, "wb") as out:
            for number in range(count):
                body = message(number)
                out.write(b"%d %s" % (len(body), body))
        print(f"machine: {os.cpu_count()} cores; {count:,} RFC 5424 messages, "
              f"{os.path.getsize(frames) / count:.0f} bytes each framed")
        port = free_port()
        child, address = start_daemon(work, f'tcp = "127.0.0.1:{port}"')
        try:
            cpu_before = cpu_seconds(child.pid)
            started = time.monotonic()
            send_file(port, frames)
            while taken(address) < count:
                time.sleep(0.005)
            wall = time.monotonic() - started
            report("daemon", count, wall, cpu_seconds(child.pid) - cpu_before, rss_kib(child.pid))
        finally:
            child.terminate()
            child.wait()
        if shutil.which("rsyslogd") is None:
            print("rsyslog   not installed: no comparison")
            return
        rsyslog_tcp(work, frames, count)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rsyslog_tcp(work: str, frames: str, count: int) -> None:
    port = free_port()
    output = os.path.join(work, "rsyslog.out")
    os.makedirs(os.path.join(work, "rsyslog"), exist_ok=True)
    config = os.path.join(work, "rsyslog.conf")
    with open(config, "w") as out:
        out.write(f"""
global(workDirectory="{work}/rsyslog" maxMessageSize="64k")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\\n")
main_queue(queue.size="200000")
input(type="imtcp" port="{port}" address="127.0.0.1")
action(type="omfile" file="{output}" template="raw" asyncWriting="on" ioBufferSize="256k")
""")
    child = subprocess.Popen(["rsyslogd", "-n", "-i", os.path.join(work, "rsyslog.pid"), "-f", config])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("rsyslog did not start")
                time.sleep(0.05)
        cpu_before = cpu_seconds(child.pid)
        started = time.monotonic()
        send_file(port, frames)
        while True:
            try:
                with open(output, "rb") as out:
                    lines = sum(block.count(b"\n") for block in iter(lambda: out.read(1 << 20), b""))
            except FileNotFoundError:
                lines = 0
            if lines >= count:
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
        report("rsyslog", count, wall, cpu_seconds(child.pid) - cpu_before, rss_kib(child.pid))
    finally:
        child.terminate()
        child.wait()


def udp_flood(work: str) -> str:
    binary_path = os.path.join(work, "udp_flood")
    subprocess.run(["gcc", "-O2", "-o", binary_path, os.path.join(ROOT, "perf/udp_flood.c")], check=True)
    return binary_path


def udp(count: int) -> None:
    work = tempfile.mkdtemp()
    try:
        port = free_port()
        child, address = start_daemon(
            work, f'udp = "127.0.0.1:{port}"\nrecv_buffer_bytes = 4194304')
        try:
            flood = udp_flood(work)
            cpu_before = cpu_seconds(child.pid)
            started = time.monotonic()
            sent = int(subprocess.run([flood, str(port), "0", str(count)], check=True,
                                      capture_output=True, text=True).stdout)
            send_wall = time.monotonic() - started
            last = None
            while True:
                time.sleep(1.2)
                body = metrics(address)
                now = (taken(address),
                       sample(body, r'log_capturer_errors_total\{component="syslog",error_type="queue_full",source_id="sys"\}'),
                       sample(body, r'log_capturer_errors_total\{component="syslog",error_type="kernel_drop",source_id="sys"\}'))
                if now == last:
                    break
                last = now
            took, queue_full, kernel = last
            cpu = cpu_seconds(child.pid) - cpu_before
            print(f"machine: {os.cpu_count()} cores; UDP, one sendmmsg sender")
            print(f"sent {sent:,} in {send_wall:.3f} s ({sent / send_wall:,.0f}/s); taken {took:,.0f} "
                  f"({took / send_wall:,.0f}/s); dropped by the daemon {queue_full:,.0f}, by the kernel "
                  f"{kernel:,.0f}; unaccounted {sent - took - queue_full - kernel:,.0f}; "
                  f"daemon CPU {cpu / max(took, 1) * 1e6:.3f} s/M")
        finally:
            child.terminate()
            child.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "tcp"
    if mode == "tcp":
        tcp(int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000)
    elif mode == "udp":
        udp(int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
