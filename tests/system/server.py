"""Start the real gunicorn (as `make serve` does) against the test database."""

from __future__ import annotations

import http.client
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecommerce.config import PROJECT_ROOT
from ecommerce.flashsale.server import BIN, GunicornProcess


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
