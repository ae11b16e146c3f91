#!/usr/bin/env python3
"""Docker json-file logs into the null sink, beside the same lines from a
plain file: lines/s, CPU seconds per million lines and peak RSS of the
daemon, each measured from its start until the null sink has every line.

docker_to_null.py BINARY LINES [ROUNDS]

Starts a private dockerd (temporary directories, no network), runs one
container that writes nothing (`sleep`), and fills that container's
`<id>-json.log` with LINES json-file lines of ~120 bytes of text (what
the driver writes: `{"log":"...\\n","stream":"stdout","time":"..."}`)
before the daemon starts, so the daemon reads a backlog as fast as it
can. The plain file holds the same texts. Rounds alternate the two and the
median of each is printed. Needs root, dockerd and busybox.
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"


def ping(sock_path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(1)
            conn.connect(sock_path)
            conn.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in conn.recv(256)
    except OSError:
        return False


def start_dockerd(work: str) -> subprocess.Popen:
    sock = f"{work}/docker.sock"
    log = open(f"{work}/dockerd.log", "w")
    daemon = subprocess.Popen(
        [DOCKERD, "--data-root", f"{work}/data", "--exec-root", f"{work}/exec",
         "--pidfile", f"{work}/dockerd.pid", "-H", f"unix://{sock}",
         "--iptables=false", "--ip6tables=false", "--bridge=none"],
        stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not ping(sock):
        if time.monotonic() > deadline or daemon.poll() is not None:
            sys.exit(f"dockerd did not start; see {work}/dockerd.log")
        time.sleep(0.1)
    return daemon


def docker(work: str, *args: str, stdin=None) -> str:
    return subprocess.run([DOCKER, "-H", f"unix://{work}/docker.sock", *args],
                          input=stdin, check=True, capture_output=True).stdout.decode().strip()


def import_image(work: str) -> None:
    image = f"{work}/image"
    os.makedirs(f"{image}/bin")
    shutil.copy(BUSYBOX, f"{image}/bin/busybox")
    os.symlink("busybox", f"{image}/bin/sh")
    tar = subprocess.run(["tar", "-C", image, "-c", "."], check=True, capture_output=True).stdout
    docker(work, "import", "-", "bench", stdin=tar)


def write_lines(json_path: str, text_path: str, count: int) -> None:
    padding = "x" * 103
    with open(json_path, "a", buffering=1 << 20) as logs, open(text_path, "w", buffering=1 << 20) as text:
        for start in range(0, count, 100_000):
            end = min(start + 100_000, count)
            texts = [f"seq={n:012} {padding}" for n in range(start, end)]
            nanos = [f"{n % 1_000_000_000:09d}" for n in range(start, end)]
            logs.write("".join(
                f'{{"log":"{t}\\n","stream":"stdout","time":"2026-11-28T10:00:00.{ns}Z"}}\n'
                for t, ns in zip(texts, nanos)))
            text.write("".join(f"{t}\n" for t in texts))


def config(work: str, name: str, source: str) -> str:
    path = f"{work}/{name}.toml"
    shutil.rmtree(f"{work}/state-{name}", ignore_errors=True)
    with open(path, "w") as out:
        out.write(f"""[daemon]
pin_threads = true
data_dir = "{work}/state-{name}"
metrics_addr = "127.0.0.1:0"

[dispatcher]
batch_size = 1000
batch_timeout_ms = 100
queue_capacity = 65536

{source}

[sinks.drop]
type = "null"
""")
    return path


def processed(address: str) -> int:
    body = urllib.request.urlopen(f"http://{address}/metrics", timeout=2).read().decode()
    for line in body.splitlines():
        if line.startswith("log_capturer_logs_processed_total{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_once(binary: str, config_path: str, count: int) -> tuple[float, float, float]:
    env = dict(os.environ, LOG_CAPTURER_LOG="info")
    started = time.monotonic()
    daemon = subprocess.Popen([binary, "run", "--config", config_path],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    address = None
    for line in daemon.stderr:
        if " started " in line and "metrics=" in line:
            address = line.split("metrics=")[1].split()[0]
            break
    if address is None:
        sys.exit(f"{config_path}: the daemon did not start")
    while processed(address) < count:
        if time.monotonic() - started > 600 or daemon.poll() is not None:
            sys.exit(f"{config_path}: not every line arrived")
        time.sleep(0.005)
    wall = time.monotonic() - started
    cpu = cpu_seconds(daemon.pid)
    rss = peak_rss_mib(daemon.pid)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=60)
    return count / wall, cpu / count * 1e6, rss


def main() -> None:
    binary, count = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    work = tempfile.mkdtemp(prefix="lcdn-", dir="/tmp")
    dockerd = start_dockerd(work)
    try:
        import_image(work)
        container = docker(work, "run", "-d", "--network", "none", "--name", "bench", "bench", "busybox", "sleep", "3600")
        inspected = json.loads(docker(work, "inspect", container))[0]
        write_lines(inspected["LogPath"], f"{work}/input.log", count)
        docker_source = f"""[sources.bench]
type = "docker"
socket = "{work}/docker.sock"
labels = {{ service = "bench" }}"""
        file_source = f"""[sources.bench]
type = "file"
paths = ["{work}/input.log"]
labels = {{ service = "bench" }}"""
        configs = {
            "docker": config(work, "docker", docker_source),
            "file": config(work, "file", file_source),
        }
        results = {name: [] for name in configs}
        for _ in range(rounds):
            for name, path in configs.items():
                shutil.rmtree(f"{work}/state-{name}", ignore_errors=True)
                results[name].append(run_once(binary, path, count))
        print(f"machine: {os.cpu_count()} cores; {count:,} lines of ~120 bytes, {rounds} rounds (median)")
        for name, runs in results.items():
            rates = [run[0] for run in runs]
            cpus = [run[1] for run in runs]
            rss = [run[2] for run in runs]
            print(f"{name:7} {statistics.median(rates):>12,.0f} lines/s   "
                  f"{statistics.median(cpus):.3f} CPU-s per million   "
                  f"peak RSS {statistics.median(rss):.1f} MiB   "
                  f"(rates {', '.join(f'{rate:,.0f}' for rate in rates)})")
    finally:
        subprocess.run([DOCKER, "-H", f"unix://{work}/docker.sock", "rm", "-f", "bench"],
                       capture_output=True)
        dockerd.send_signal(signal.SIGTERM)
        try:
            dockerd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dockerd.kill()
        subprocess.run(["umount", "-R", f"{work}/exec"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
