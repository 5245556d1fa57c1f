"""The payment provider's client: every way a call can fail is one outcome,
GatewayUnavailable (the outcome unknown), and the whole call has one deadline.

A provider on loopback that misbehaves on purpose, a raw socket server per
case. Before the fix, a reply cut mid-body (IncompleteRead), a bad status line
(BadStatusLine), a 404 to a charge and a JSON body that is not an object
escaped the client as other exceptions (a 500 to the buyer), and a provider
that trickled its answer a byte at a time, each byte within the timeout, was
waited for to the end (the charge answered "succeeded" after the timeout)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from ecommerce.gateway import SUCCEEDED, GatewayUnavailable, HttpGateway

Reply = Callable[[socket.socket], None]


@pytest.fixture
def provider() -> Iterator[Callable[[Reply], str]]:
    """A provider that answers every connection with ``reply``; returns its URL."""
    listeners: list[socket.socket] = []

    def start(reply: Reply) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn, contextlib.suppress(OSError):  # OSError: the client gave up
                    conn.recv(65536)  # the request (small enough for one read)
                    reply(conn)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()


def http_answer(status: str, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\n\r\n".encode() + body


def sends(raw: bytes) -> Reply:
    return lambda conn: conn.sendall(raw)


MISBEHAVIOURS = {
    "cut_mid_body": sends(http_answer("200 OK", b'{"status": "succ', length=40)),
    "bad_status_line": sends(b"HTTP/9.9 banana\r\n\r\n"),
    "not_http": sends(b"\x00\x01\x02 hello\r\n\r\n"),
    "not_found": sends(http_answer("404 Not Found", b'{"error": "no such endpoint"}')),
    "server_error": sends(http_answer("500 Internal Server Error", b"oops")),
    "not_json": sends(http_answer("200 OK", b"<html>hi</html>")),
    "json_list": sends(http_answer("200 OK", b'["succeeded"]')),
    "json_string": sends(http_answer("200 OK", b'"succeeded"')),
    "unknown_status": sends(http_answer("200 OK", b'{"status": "maybe"}')),
    "closed_at_once": lambda conn: None,
}


@pytest.mark.parametrize("misbehaviour", sorted(MISBEHAVIOURS))
@pytest.mark.parametrize("call", ["charge", "refund", "void", "lookup"])
def test_every_failure_of_a_call_is_one_outcome(provider, misbehaviour, call):
    gateway = HttpGateway(provider(MISBEHAVIOURS[misbehaviour]), timeout_s=2)
    if call == "lookup" and misbehaviour == "not_found":
        assert gateway.lookup(7) is None  # the one 404 that means something
        return
    with pytest.raises(GatewayUnavailable):
        if call == "charge":
            gateway.charge(7, Decimal("1.00"))
        elif call == "refund":
            gateway.refund(7, Decimal("1.00"))
        elif call == "void":
            gateway.void(7)
        else:
            gateway.lookup(7)


def test_a_provider_that_trickles_its_answer_is_cut_off_at_the_deadline(provider):
    """Each byte comes well within the timeout, the whole answer long after it:
    one deadline for the whole call, not one per socket read."""
    answer = http_answer("200 OK", b'{"status": "succeeded"}')

    def trickle(conn: socket.socket) -> None:
        for byte in answer:
            conn.sendall(bytes([byte]))
            time.sleep(0.03)  # the provider's pace, not a wait of the test

    gateway = HttpGateway(provider(trickle), timeout_s=0.3)
    with pytest.raises(GatewayUnavailable):
        gateway.charge(7, Decimal("1.00"))
    # The same provider answering at once: the client reads a well-formed answer.
    assert HttpGateway(provider(sends(answer)), 2).charge(7, Decimal("1.00")) == SUCCEEDED
