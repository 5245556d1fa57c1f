"""This project's gunicorn on a free loopback port, started and stopped by code
(the simulator, and the end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from ecommerce.config import PROJECT_ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    """Until GET ``url`` answers 200; RuntimeError if ``process`` exits first or
    ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{process.args[0]} did not start serving {url}")


def build_failure(args: list[str], what: str, timeout_s: float, **popen: Any) -> str | None:
    """Run a build command; None when it succeeded, else why ``what`` did not
    build (its last line of output, or the time it took too long)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, **popen)
    except subprocess.TimeoutExpired:
        return f"{what} did not build within {timeout_s / 60:g} minutes"
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"{what} did not build: {lines[-1] if lines else done.returncode}"


def stop_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM to ``process``'s group (it was started in a session of its own),
    SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class GunicornProcess:
    """``gunicorn -c python:ecommerce.gunicorn_conf wsgi:app`` with ``env`` on top of ours
    (``app`` names another WSGI application, e.g. one a test wraps)."""

    def __init__(
        self, env: dict[str, str], app: str = "wsgi:app", log_path: Path | None = None
    ) -> None:
        self.port = free_port()
        self.app = app
        self.log_path = log_path  # gunicorn's stderr (its log and the app's), if given
        self._log: BinaryIO | None = None
        self.env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "LOG_LEVEL": "warning",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 30) -> GunicornProcess:
        """Start it and wait until it is live (GET /healthz answers 200)."""
        self._log = self.log_path.open("ab") if self.log_path else None
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "python:ecommerce.gunicorn_conf", self.app],
            cwd=PROJECT_ROOT,
            env=self.env,
            start_new_session=True,
            stderr=self._log,
        )
        wait_until_serving(self.process, f"http://127.0.0.1:{self.port}/healthz", ready_timeout)
        return self

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process is None:
            return
        self._stop()
        if self._log is not None:
            self._log.close()

    def _stop(self) -> None:
        assert self.process is not None
        stop_group(self.process, 30)
        self.process = None

    def __enter__(self) -> GunicornProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mean_batch_sizes(host: str, port: int) -> dict[str, float]:
    """Requests per batch (a batch of one counts) over the server's life, from /metrics:
    "pay" (buyers per combined pay), "add" and "read" (per combined cart
    transaction); a kind that never ran a batch is absent."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        scrape = response.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape):
        if family.name not in ("shop_pay_batch_size", "shop_cart_batch_size"):
            continue
        for sample in family.samples:
            kind = sample.labels.get("kind", "pay")
            if sample.name.endswith("_sum"):
                sums[kind] = sample.value
            elif sample.name.endswith("_count"):
                counts[kind] = sample.value
    return {kind: round(sums[kind] / n, 1) for kind, n in counts.items() if n and kind in sums}


def warm_up(host: str, port: int, requests: int) -> None:
    """Let every worker open its connections before the clock starts."""

    def get() -> None:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/items", timeout=10):
                pass
        except urllib.error.HTTPError:  # a 503 warms up too: its answer does not matter
            pass

    threads = [threading.Thread(target=get) for _ in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
