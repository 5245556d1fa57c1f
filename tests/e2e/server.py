"""Start the real gunicorn (as `make serve` does) against the test database."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and "error" in self.body:
            return self.body["error"]["code"]
        return None


class HttpClient:
    """A tiny keep-alive JSON client; one per thread."""

    def __init__(self, port: int, timeout: float = 30, reconnect: bool = True) -> None:
        self.port = port
        self.timeout = timeout
        # Resend once on a kept-alive connection the server closed. Off where a
        # resend would hide what the test looks at (a worker killed mid-request).
        self.reconnect = reconnect
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        payload = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=payload, headers=all_headers)
                raw = self.conn.getresponse()
                data = raw.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # A kept-alive connection closed by the server: reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt or not self.reconnect:
                    raise
        content_type = raw.getheader("Content-Type", "")
        parsed = json.loads(data) if content_type.startswith("application/json") else data
        return Response(raw.status, dict(raw.getheaders()), parsed)

    def close(self) -> None:
        self.conn.close()


class Server:
    def __init__(self, database_url: str, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_ACCESS_LOG": "",
            "GUNICORN_LOG_LEVEL": "warning",
            "WEB_CONCURRENCY": "3",
            "GUNICORN_THREADS": "4",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def flask(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flask"), *args],
            cwd=ROOT,
            env={**self.env, "FLASK_APP": "wsgi:app"},
            capture_output=True,
            text=True,
            check=True,
        )

    def start(self, ready_timeout: float = 30) -> Server:
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:ecommerce.gunicorn_conf", "wsgi:app"],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                client = HttpClient(self.port, timeout=2)
                if client.request("GET", "/items").status == 200:
                    client.close()
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not become ready")

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
