"""The HTTP probe's own HTTP/1.1 client against real servers: status, bodies (length, chunked,
until close), basic auth, a server that is not HTTP, and a hang (timeout)."""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chimera_ops.probes.factory import build_probe
from chimera_ops.probes.spec import ProbeConfig
from tests.services import free_port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"status: ", b"all good"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/auth":
            ok = self.headers.get("Authorization") == "Basic dXNlcjpzM2NyZXQ="
            body = b"welcome" if ok else b"who are you"
            self.send_response(200 if ok else 401)
        elif self.path == "/sick":
            body = b'{"ok": false, "reason": "database lost"}'
            self.send_response(503)
        else:
            body = b'{"ok": true}'
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_port():
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()


def probe(spec: dict) -> object:
    return asyncio.run(build_probe(ProbeConfig.model_validate(spec)).run())


def test_ok_unhealthy_chunked_and_auth(server_port: int):
    base = f"http://127.0.0.1:{server_port}"
    assert probe({"http": f"{base}/health"}).ok
    sick = probe({"http": f"{base}/sick"})
    assert not sick.ok and "503" in sick.reason and "database lost" in sick.reason
    chunked = probe({"http": {"url": f"{base}/chunked", "body_contains": "all good"}})
    assert chunked.ok, chunked.reason
    authed = probe({"http": f"http://user:s3cret@127.0.0.1:{server_port}/auth"})
    assert authed.ok and "s3cret" not in authed.reason
    assert not probe({"http": {"url": f"{base}/health", "body_contains": "nope"}}).ok


def test_not_http_and_hanging_servers_fail_with_reasons():
    port = free_port()
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen(5)

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        conn.recv(1024)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    garbage = probe({"http": f"http://127.0.0.1:{port}/health", "timeout": "2s"})
    assert not garbage.ok and "not an HTTP answer" in garbage.reason
    hang = probe(
        {"http": f"http://127.0.0.1:{port}/health", "timeout": "0.3s"}
    )  # accepted, never answered
    assert not hang.ok and "timed out" in hang.reason
    listener.close()
