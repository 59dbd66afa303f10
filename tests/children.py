"""Small real programs the tests supervise: `python tests/children.py KIND ...`.

http PORT            an HTTP server answering GET /health with 200 (and /metrics: pool gauges)
stubborn PORT        the same server, ignoring SIGTERM (only SIGKILL ends it)
slow-http SECS PORT  the same server, listening only after SECS seconds
crash SECONDS CODE   run a little, then exit with CODE
setsid-spawn PORT    start a grandchild that calls setsid() and listens on PORT, then sleep
sleep                sleep forever, ignoring nothing
leak MB_PER_S        allocate and keep MB_PER_S megabytes every second (the unbounded-history bug)
saw MB PERIOD        allocate up to MB then free it, every PERIOD seconds: busy but not leaking
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import sys
import time

# Pool gauges in the shape the paper engine exports (`paper_pool_*`), for the app-pool monitor.
_METRICS = (
    b'paper_pool_size{pool="db"} 2\npaper_pool_in_use{pool="db"} 1\npaper_pool_max{pool="db"} 8\n'
)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.startswith("/metrics"):
            self.send_response(200)
            self.send_header("content-length", str(len(_METRICS)))
            self.end_headers()
            self.wfile.write(_METRICS)
            return
        body = b'{"ok": true}'
        self.send_response(200 if self.path.startswith("/health") else 404)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve_http(port: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Health)
    print(f"serving on {port}", flush=True)
    server.serve_forever()


def setsid_spawn(port: int) -> None:
    pid = os.fork()
    if pid == 0:
        os.setsid()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(5)
        print(f"grandchild {os.getpid()} listening on {port}", flush=True)
        while True:
            time.sleep(1)
    print(f"spawned grandchild {pid}", flush=True)
    while True:
        time.sleep(1)


def chatty(rate: float, heartbeat: str, width: int) -> None:
    """Print numbered lines at `rate` per second; every 0.1 s write `<seq> <longest pause>` to
    `heartbeat` (the longest time one print took: a blocked pipe shows as a long pause)."""
    seq, longest, next_beat = 0, 0.0, time.monotonic()
    pad = "x" * max(0, width - 20)
    started = time.monotonic()
    while True:
        due = started + seq / rate
        now = time.monotonic()
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        before = time.monotonic()
        print(f"line {seq:010d} {pad}", flush=True)
        longest = max(longest, time.monotonic() - before)
        seq += 1
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + 0.1
            tmp = heartbeat + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{seq} {longest:.3f} {time.time():.3f}")
            os.replace(tmp, heartbeat)


def blast(seconds: float, width: int, report: str, block: int = 8192) -> None:
    """Print `width`-byte lines as fast as the pipe takes them for `seconds` (writes of `block`
    bytes, as stdio's block buffering does); write the bytes/s reached to `report`; then idle."""
    line = b"y" * (width - 1) + b"\n"
    data = line * max(1, block // len(line))
    written, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        written += os.write(1, data)
    elapsed = time.monotonic() - started
    with open(report + ".tmp", "w") as fh:
        fh.write(f"{written / elapsed:.0f}")
    os.replace(report + ".tmp", report)
    while True:
        time.sleep(1)


def main() -> None:
    kind = sys.argv[1]
    if kind == "http":
        serve_http(int(sys.argv[2]))
    elif kind == "slow-http":
        time.sleep(float(sys.argv[2]))  # a service that takes a while before it listens
        serve_http(int(sys.argv[3]))
    elif kind == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        serve_http(int(sys.argv[2]))
    elif kind == "crash":
        time.sleep(float(sys.argv[2]))
        print("crashing now", file=sys.stderr, flush=True)
        sys.exit(int(sys.argv[3]))
    elif kind == "setsid-spawn":
        setsid_spawn(int(sys.argv[2]))
    elif kind == "leak":
        rate = float(sys.argv[2])
        kept: list[bytearray] = []
        while True:
            for _ in range(10):
                kept.append(bytearray(b"x" * int(rate * 1024 * 1024 / 10)))
                time.sleep(0.1)
    elif kind == "saw":
        top, period = float(sys.argv[2]), float(sys.argv[3])
        steps = 10
        while True:
            held = []
            for _ in range(steps):
                held.append(bytearray(b"y" * int(top * 1024 * 1024 / steps)))
                time.sleep(period / steps / 2)
            del held
            time.sleep(period / 2)
    elif kind == "blast":
        blast(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif kind == "chatty":
        chatty(float(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 100)
    elif kind == "sleep":
        while True:
            time.sleep(1)
    else:
        raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
