#!/usr/bin/env python3
"""Log lines that look like a VoIP host's: OpenSIPS and MySQL, for measuring
what the DLQ stores per line (and for load runs that should not be padding).

    voip_lines.py PATH COUNT [--mode random|template] [--seed N] [--numbered]
    voip_lines.py - COUNT ...          (writes to standard output)

--mode random (the default): every line carries fresh random identifiers:
a 32-hex-digit Call-ID, 8-hex-digit tags, IPv4 addresses, 10-to-11-digit
user numbers, plus a SIP method, a response code, a timestamp and a pid.
Lines average about 144 bytes, of which about a third are random
characters; the random fields hold about 30 bytes of information, the floor
under what any compressor can store per line.

--mode template: the same message shapes, as a real host logs them: a call
writes many lines, so Call-IDs, tags, addresses and numbers come from a pool
of 200 calls in progress (each replaced after about 12 lines), and only the
timestamps, pids, counters and durations vary from line to line.

--numbered puts `seq=NNNNNNNNNNNN ` (12 digits) at the start of every line,
so that a consumer can check that each line arrived once.

Deterministic for a given seed. Lines are ASCII and end with `\n`.
"""
import random
import sys

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "UPDATE", "PRACK", "INFO", "NOTIFY"]
CODES = [(100, "Trying"), (180, "Ringing"), (183, "Session Progress"), (200, "OK"), (401, "Unauthorized"),
         (404, "Not Found"), (407, "Proxy Authentication Required"), (408, "Request Timeout"),
         (480, "Temporarily Unavailable"), (486, "Busy Here"), (487, "Request Terminated"), (503, "Service Unavailable")]
HOSTS = ["sbc01", "sbc02"]
MODULES = ["dialog", "tm", "acc", "rtpengine", "dispatcher", "registrar", "auth_db", "nathelper"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class Call:
    """The identifiers one call carries through its lines."""

    def __init__(self, rng: random.Random) -> None:
        self.call_id = f"{rng.getrandbits(128):032x}"
        self.from_tag = f"{rng.getrandbits(32):08x}"
        self.to_tag = f"{rng.getrandbits(32):08x}"
        self.caller = f"+1{rng.randrange(10**9, 10**10)}"
        self.callee = f"{rng.randrange(10**9, 10**10)}"
        self.source_ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        self.peer_ip = f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        self.lines_left = rng.randrange(6, 18)


class Lines:
    def __init__(self, mode: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mode = mode
        self.pool = [Call(self.rng) for _ in range(200)]
        self.second = 1_795_737_600  # 2026-11-28T00:00:00Z
        self.micros = 0
        self.counter = 1000

    def call(self) -> Call:
        if self.mode == "random":
            return Call(self.rng)
        index = self.rng.randrange(len(self.pool))
        call = self.pool[index]
        call.lines_left -= 1
        if call.lines_left <= 0:
            self.pool[index] = Call(self.rng)
        return call

    def tick(self) -> None:
        # About 50,000 lines a second.
        self.micros += self.rng.randrange(1, 40)
        if self.micros >= 1_000_000:
            self.micros -= 1_000_000
            self.second += 1

    def syslog_time(self) -> str:
        seconds = self.second % 86400
        day = 28
        return f"Nov {day} {seconds // 3600:02}:{seconds // 60 % 60:02}:{seconds % 60:02}"

    def iso_time(self) -> str:
        seconds = self.second % 86400
        return f"2026-11-28T{seconds // 3600:02}:{seconds // 60 % 60:02}:{seconds % 60:02}.{self.micros:06}Z"

    def line(self) -> str:
        self.tick()
        rng = self.rng
        self.counter += 1
        if rng.random() < 0.2:
            return self.mysql()
        call = self.call()
        host = rng.choice(HOSTS)
        pid = rng.randrange(2100, 2140)
        head = f"{self.syslog_time()} {host} opensips[{pid}]:"
        shape = rng.randrange(5)
        method = rng.choice(METHODS)
        if shape == 0:
            code, text = rng.choice(CODES)
            return (f"{head} INFO:dialog: {method} {code} {text} ci={call.call_id} "
                    f"ft={call.from_tag} tt={call.to_tag} src={call.source_ip}")
        if shape == 1:
            return (f"{head} NOTICE:acc: {method} from=sip:{call.caller}@{call.source_ip} "
                    f"to=sip:{call.callee}@{call.peer_ip} ci={call.call_id}")
        if shape == 2:
            code, _ = rng.choice(CODES)
            return (f"{head} DBG:tm:t_reply: ci={call.call_id} code={code} "
                    f"branch=z9hG4bK{call.from_tag}.{rng.randrange(10)} t={rng.randrange(1, 9000)}ms")
        if shape == 3:
            return (f"{head} INFO:rtpengine: offer ci={call.call_id} ft={call.from_tag} "
                    f"media={call.peer_ip}:{rng.randrange(10000, 60000)} codec=PCMU")
        module = rng.choice(MODULES)
        return (f"{head} WARNING:{module}: {method} ci={call.call_id} user={call.caller} "
                f"timeout after {rng.randrange(1, 32)}s cseq={rng.randrange(1, 999)}")

    def mysql(self) -> str:
        rng = self.rng
        thread = rng.randrange(10, 99999)
        call = self.call()
        shape = rng.randrange(3)
        if shape == 0:
            return (f"{self.iso_time()} {thread} [Warning] [MY-010055] [Server] IP address "
                    f"'{call.source_ip}' could not be resolved: Name or service not known")
        if shape == 1:
            return (f"{self.iso_time()} {thread} [Note] [MY-010914] [Server] Aborted connection "
                    f"{thread} to db: 'opensips' user: 'opensips' host: '{call.peer_ip}'")
        return (f"# Query_time: {rng.randrange(1, 9)}.{rng.randrange(10**6):06} Rows_examined: "
                f"{rng.randrange(1, 50000)} SELECT * FROM acc WHERE callid='{call.call_id}'")


def main() -> None:
    args = sys.argv[1:]
    mode, seed, numbered = "random", 1, False
    positional = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--mode":
            mode = args[index + 1]
            index += 1
        elif arg == "--seed":
            seed = int(args[index + 1])
            index += 1
        elif arg == "--numbered":
            numbered = True
        else:
            positional.append(arg)
        index += 1
    if len(positional) != 2 or mode not in ("random", "template"):
        sys.exit(__doc__)
    path, count = positional[0], int(positional[1])
    lines = Lines(mode, seed)
    out = sys.stdout if path == "-" else open(path, "w", buffering=1 << 20)
    with out:
        batch = 10_000
        for start in range(0, count, batch):
            end = min(start + batch, count)
            if numbered:
                out.write("".join(f"seq={n:012} {lines.line()}\n" for n in range(start, end)))
            else:
                out.write("".join(f"{lines.line()}\n" for _ in range(start, end)))


if __name__ == "__main__":
    main()
