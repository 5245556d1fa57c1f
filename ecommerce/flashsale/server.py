"""This project's gunicorn on a free loopback port, started and stopped by code
(the simulator, and the end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ecommerce.config import PROJECT_ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornProcess:
    """``gunicorn -c python:ecommerce.gunicorn_conf wsgi:app`` with ``env`` on top of ours
    (``app`` names another WSGI application, e.g. one a test wraps)."""

    def __init__(self, env: dict[str, str], app: str = "wsgi:app") -> None:
        self.port = free_port()
        self.app = app
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_ACCESS_LOG": "",
            "GUNICORN_LOG_LEVEL": "warning",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 30) -> GunicornProcess:
        """Start it and wait until GET /items answers 200."""
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:ecommerce.gunicorn_conf", self.app],
            cwd=PROJECT_ROOT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/items", timeout=2):
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

    def __enter__(self) -> GunicornProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
