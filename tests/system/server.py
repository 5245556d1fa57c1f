"""Start the real gunicorn (as `make serve` does) against the test database."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecommerce.config import PROJECT_ROOT
from ecommerce.flashsale.server import BIN, GunicornProcess
from tests.helpers import wait_for


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

    def connect(self) -> int:
        """Connect now rather than at the first request; returns this end's port
        (the connection's name in /proc/net/tcp, see :func:`wait_until_accepted`)."""
        self.conn.connect()
        return self.conn.sock.getsockname()[1]

    def close(self) -> None:
        self.conn.close()


class Server(GunicornProcess):
    """gunicorn against the test database, and the flask CLI with the same environment."""

    def __init__(
        self, database_url: str, app: str = "wsgi:app", log_path: Path | None = None, **env: str
    ) -> None:
        super().__init__(
            {"DATABASE_URL": database_url, "WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "4", **env},
            app=app,
            log_path=log_path,
        )

    def flask(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flask"), *args],
            cwd=PROJECT_ROOT,
            env={**self.env, "FLASK_APP": "wsgi:app"},
            capture_output=True,
            text=True,
            check=True,
        )


def accepted_client_ports(port: int) -> set[int]:
    """The client ports of the open loopback connections to ``port`` that the
    server has accepted. In /proc/net/tcp a connection still waiting in a
    listener's accept queue has no inode yet; once a process accepted it, it has."""
    accepted = set()
    with open("/proc/net/tcp") as table:
        next(table)  # the header
        for line in table:
            _, local, remote, state, *_, inode = line.split()[:10]
            if state == "01" and int(local.split(":")[1], 16) == port and inode != "0":
                accepted.add(int(remote.split(":")[1], 16))  # 01: ESTABLISHED
    return accepted


def wait_until_accepted(
    port: int, client_ports: list[int], count: int, timeout: float = 10
) -> None:
    """Poll until ``client_ports`` (filled in by the clients as they connect) holds
    ``count`` ports and the server on ``port`` has accepted each one's connection:
    each is then a worker's, in flight, which a graceful stop must answer, and no
    longer one waiting in the kernel's backlog."""

    def all_accepted() -> bool:
        ports = set(client_ports)
        return len(ports) >= count and not ports - accepted_client_ports(port)

    wait_for(all_accepted, timeout, f"for {count} connections accepted by the server on {port}")


def wait_until_refused(port: int, timeout: float = 10) -> None:
    """Poll until a new connection to ``port`` is refused (nothing listens there
    any more), or fail."""

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return True
        return False

    wait_for(refused, timeout, f"for port {port} to refuse new connections")


class Shoppers:
    """Threads of buyers of one item through the HTTP API, each with its own
    connection: add one unit, pay, again and again as new users. ``keyed``: the
    pay carries an Idempotency-Key and a 503 is retried with it, as a
    well-behaved client does. Every answer is recorded with when it came, and
    the orders answered 201 with their ids."""

    def __init__(self, port: int, item_id: int, count: int, *, keyed: bool, timeout: float = 30):
        self.port, self.item_id, self.keyed, self.timeout = port, item_id, keyed, timeout
        self.events: list[tuple[float, str, int, str | None]] = []  # (when, step, status, code)
        self.acknowledged: dict[str, int] = {}  # user -> order id answered 201
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._shop, args=(n,)) for n in range(count)]

    def start(self) -> Shoppers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a shopper hung"

    def answered(self, step: str, status: int, after: float = 0.0) -> bool:
        """Whether a ``step`` was answered ``status`` after the time ``after``."""
        return any(t > after and s == step and st == status for t, s, st, _ in list(self.events))

    def _shop(self, n: int) -> None:
        http = HttpClient(self.port, timeout=self.timeout)
        i = 0
        try:
            while not self._stop.is_set():
                user = f"s{n}-{i}"
                i += 1
                r = http.request(
                    "POST", f"/cart/{user}/add", {"item_id": self.item_id, "quantity": 1}
                )
                self.events.append((time.monotonic(), "add", r.status, r.error_code))
                if r.status == 503:
                    assert "Retry-After" in r.headers
                    time.sleep(0.05)
                if r.status != 200:
                    continue
                key = {"Idempotency-Key": f"pay-{user}"} if self.keyed else {}
                while not self._stop.is_set():
                    r = http.request("POST", f"/cart/{user}/pay", {"amount": "1.00"}, key)
                    self.events.append((time.monotonic(), "pay", r.status, r.error_code))
                    if r.status == 201:
                        self.acknowledged[user] = r.body["order_id"]
                    if r.status != 503:
                        break
                    assert "Retry-After" in r.headers
                    time.sleep(0.05)
                    if not self.keyed:
                        break  # without a key a retry could pay twice: a new buyer instead
        except BaseException as exc:
            self.failures.append(exc)
