"""`flask fake-gateway`: a payment provider to test against and to rehearse with.

It speaks the protocol of ecommerce/gateway.py, keeps its charges in memory, and
behaves by the amount: a charge whose amount ends in .13 is declined, one ending
in .14 is never answered (the shop's timeout runs out), any other succeeds. A
repeated idempotency key gets the first outcome again; nothing is charged twice.
A voided key declines every charge that arrives after the void.
``--latency-ms`` delays every charge, like a real provider that waits for the
card network; refunds, voids and look-ups answer at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

DECLINE_SUFFIX = ".13"
HANG_SUFFIX = ".14"


class FakeProvider:
    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.charges: dict[str, dict[str, Any]] = {}  # idempotency key -> charge
        self.refunds: dict[str, dict[str, Any]] = {}
        self.charge_calls = 0
        self.charges_in_flight = 0  # charge requests received and not yet decided

    def charge(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The answer, or None: never answer."""
        amount = str(body.get("amount", ""))
        key = str(body.get("idempotency_key", ""))
        with self.lock:
            self.charge_calls += 1
            if key in self.charges:
                return self.charges[key]
            if amount.endswith(HANG_SUFFIX):
                return None
            status = "declined" if amount.endswith(DECLINE_SUFFIX) else "succeeded"
            self.charges[key] = {"status": status, "reference": body.get("reference")}
            return self.charges[key]

    def void(self, key: str) -> dict[str, Any]:
        """Close a charge key: a charge that has not succeeded never will."""
        with self.lock:
            return self.charges.setdefault(key, {"status": "declined", "voided": True})

    def view(self, key: str) -> dict[str, Any] | None:
        """A charge with whether it was refunded (refunds name the same reference)."""
        with self.lock:
            charge = self.charges.get(key)
            if charge is None:
                return None
            reference = charge.get("reference")
            refunded = reference is not None and any(
                r.get("reference") == reference for r in self.refunds.values()
            )
            return {**charge, "refunded": refunded}

    def refund(self, body: dict[str, Any]) -> dict[str, Any]:
        key = str(body.get("idempotency_key", ""))
        with self.lock:
            self.refunds.setdefault(
                key, {"status": "succeeded", "reference": body.get("reference")}
            )
            return self.refunds[key]

    def stats(self) -> dict[str, int]:
        with self.lock:
            outcomes = [c["status"] for c in self.charges.values()]
            refunded = {r.get("reference") for r in self.refunds.values()}
            kept = [
                c
                for c in self.charges.values()
                if c["status"] == "succeeded" and c.get("reference") not in refunded
            ]
            return {
                "charge_calls": self.charge_calls,
                "succeeded": outcomes.count("succeeded"),
                "declined": outcomes.count("declined"),
                "voided": sum(1 for c in self.charges.values() if c.get("voided")),
                "refunds": len(self.refunds),
                "kept": len(kept),
            }


def make_server(host: str, port: int, provider: FakeProvider) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # caller gave up
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                parsed = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return {}
            return parsed if isinstance(parsed, dict) else {}

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/charges":
                with provider.lock:
                    provider.charges_in_flight += 1
                time.sleep(provider.latency_s)
                try:
                    answer = provider.charge(body)
                finally:
                    with provider.lock:
                        provider.charges_in_flight -= 1
                if answer is None:
                    time.sleep(3600)  # never answered: the caller times out
                    return
                self._send(HTTPStatus.OK, answer)
            elif self.path == "/refunds":
                self._send(HTTPStatus.OK, provider.refund(body))
            elif self.path.startswith("/charges/") and self.path.endswith("/void"):
                key = self.path.removeprefix("/charges/").removesuffix("/void")
                self._send(HTTPStatus.OK, provider.void(key))
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "no such endpoint"})

        def do_GET(self) -> None:
            if self.path.startswith("/charges/"):
                charge = provider.view(self.path.removeprefix("/charges/"))
                if charge is None:
                    self._send(HTTPStatus.NOT_FOUND, {"error": "no such charge"})
                else:
                    self._send(HTTPStatus.OK, charge)
            elif self.path == "/stats":
                self._send(HTTPStatus.OK, provider.stats())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "no such endpoint"})

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # A shop calls with a new connection per charge, dozens at once; the
        # default backlog (5) made callers wait for SYN retries (~1 s each).
        request_queue_size = 1024

    return Server((host, port), Handler)


def start_in_thread(
    latency_ms: int = 0, host: str = "127.0.0.1"
) -> tuple[ThreadingHTTPServer, FakeProvider]:
    """A fake provider on a free port, served by a daemon thread (tests, the simulator)."""
    provider = FakeProvider(latency_ms / 1000)
    server = make_server(host, 0, provider)
    threading.Thread(target=server.serve_forever, daemon=True, name="fake-gateway").start()
    return server, provider


@click.command(
    "fake-gateway", help="Serve a fake payment provider (declines .13, never answers .14)."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
@click.option("--latency-ms", default=0, show_default=True, type=click.IntRange(0, 60_000))
def command(host: str, port: int, latency_ms: int) -> None:
    server = make_server(host, port, FakeProvider(latency_ms / 1000))
    click.echo(f"fake payment provider on http://{host}:{port} (PAYMENT_GATEWAY_URL)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
