"""The payment provider, reached over HTTP with a bounded timeout; or none.

With PAYMENT_GATEWAY_URL unset the shop is its own "instant" provider: a pay is
charged and paid in the transaction that takes the stock, as the design note's
curl commands expect. With it set, a pay reserves the stock (a pending order),
charges the provider with no transaction open, then confirms or releases
(ecommerce/services/payment.py, ecommerce/services/charging.py).

The protocol (JSON over HTTP; `flask fake-gateway` serves it for tests and
rehearsals):

* ``POST /charges`` ``{"reference": "order-42", "amount": "12.50",
  "idempotency_key": "charge-order-42"}`` -> ``{"status": "succeeded" |
  "declined"}``. The same idempotency key is never charged twice: the provider
  answers the first outcome again.
* ``POST /refunds`` ``{"reference", "amount", "idempotency_key":
  "refund-order-42"}`` -> ``{"status": "succeeded"}``, once per key likewise.
* ``GET /charges/<idempotency_key>`` -> ``{"status": ..., "refunded": bool}``,
  or 404 if that charge never reached the provider (used by `flask
  reconcile-payments`, and by `flask check-invariants` to compare the money the
  provider kept with the orders paid).
* ``POST /charges/<idempotency_key>/void`` -> ``{"status": ...}``: the charge's
  final outcome. A charge that has not succeeded yet never will: the key is
  closed, and a charge request that arrives later with it is declined. The shop
  voids a pending order's charge before it cancels or expires the order, so a
  late success can never leave the buyer's money with an order that no longer
  exists (ecommerce/services/orders.py).
* The provider may also tell the shop later: ``POST /payments/webhook`` on the
  shop, body ``{"reference": "order-42", "status": "succeeded" | "declined"}``,
  header ``X-Signature: sha256=<hex HMAC-SHA256 of the raw body with
  PAYMENT_WEBHOOK_SECRET>``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import time
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ecommerce.money import format_money

SUCCEEDED = "succeeded"
DECLINED = "declined"


class GatewayUnavailable(Exception):
    """No answer within PAYMENT_GATEWAY_TIMEOUT_MS (one deadline for the whole
    call), or no answer that means anything: the outcome is unknown."""


@dataclass(frozen=True)
class ChargeState:
    """What the provider knows of an order's charge."""

    status: str  # SUCCEEDED or DECLINED
    refunded: bool = False

    @property
    def kept(self) -> bool:
        """Whether the provider holds the buyer's money for it."""
        return self.status == SUCCEEDED and not self.refunded


def charge_key(order_id: int) -> str:
    return f"charge-order-{order_id}"


def reference(order_id: int) -> str:
    return f"order-{order_id}"


def order_of(ref: str) -> int | None:
    prefix, _, number = ref.partition("-")
    return int(number) if prefix == "order" and number.isdigit() and len(number) < 19 else None


class HttpGateway:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def charge(self, order_id: int, amount: Decimal) -> str:
        """SUCCEEDED or DECLINED; GatewayUnavailable when the outcome is unknown."""
        answer = self._call(
            "POST",
            "/charges",
            {
                "reference": reference(order_id),
                "amount": format_money(amount),
                "idempotency_key": charge_key(order_id),
            },
        )
        return self._outcome(answer)

    def refund(self, order_id: int, amount: Decimal) -> None:
        answer = self._call(
            "POST",
            "/refunds",
            {
                "reference": reference(order_id),
                "amount": format_money(amount),
                "idempotency_key": f"refund-order-{order_id}",
            },
        )
        if answer.get("status") != SUCCEEDED:
            raise GatewayUnavailable(f"the refund of order {order_id} was not confirmed")

    def lookup(self, order_id: int) -> ChargeState | None:
        """The state of the order's charge, None if it never reached the provider."""
        try:
            answer = self._call("GET", f"/charges/{charge_key(order_id)}", None, missing_ok=True)
        except _NotFound:
            return None
        return ChargeState(self._outcome(answer), bool(answer.get("refunded")))

    def void(self, order_id: int) -> str:
        """Close the order's charge: its final outcome, SUCCEEDED (it went through
        before) or DECLINED (it never will); GatewayUnavailable when unknown."""
        answer = self._call("POST", f"/charges/{charge_key(order_id)}/void", {})
        return self._outcome(answer)

    @staticmethod
    def _outcome(answer: dict[str, Any]) -> str:
        status = answer.get("status")
        if status not in (SUCCEEDED, DECLINED):
            raise GatewayUnavailable(f"the provider answered {status!r}")
        return status

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None, *, missing_ok: bool = False
    ) -> dict[str, Any]:
        """The provider's JSON object answer. Every way the call can fail (no
        connection, a reset, a reply cut mid-body, a bad status line, an HTTP
        error, a body that is not a JSON object, the deadline) is one outcome:
        GatewayUnavailable, the outcome unknown. A 404 is _NotFound when
        ``missing_ok`` (a look-up of a charge the provider never saw)."""
        data = json.dumps(body).encode() if body is not None else None
        try:
            status, raw = _exchange(
                self.url + path, method, data, time.monotonic() + self.timeout_s
            )
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise GatewayUnavailable(f"the provider did not answer: {error!r}") from error
        if status == 404 and missing_ok:
            raise _NotFound
        if not 200 <= status < 300:
            raise GatewayUnavailable(f"the provider answered HTTP {status}")
        try:
            answer = json.loads(raw or b"{}")
        except ValueError as error:
            raise GatewayUnavailable("the provider's answer is not JSON") from error
        if not isinstance(answer, dict):
            raise GatewayUnavailable("the provider's answer is not a JSON object")
        return answer


def _exchange(url: str, method: str, data: bytes | None, deadline: float) -> tuple[int, bytes]:
    """One HTTP request and its whole answer (status, body), within ``deadline``
    (time.monotonic()): a total bound, not one per socket read, so a provider
    that trickles its answer a byte at a time is cut off at the deadline too."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=_remaining(deadline))
    try:
        connection.connect()
        connection.sock = _DeadlineSocket(connection.sock, deadline)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", "Connection": "close"}
        connection.request(method, target, body=data, headers=headers)
        with contextlib.closing(connection.getresponse()) as response:
            return response.status, response.read()
    finally:
        connection.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the provider's deadline passed")
    return left


class _DeadlineSocket:
    """A connected socket whose every send and receive is bounded by what is left
    of one deadline (http.client reads through ``makefile``)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: object, **kwargs: object) -> io.BufferedReader:
        # The socket's own reader underneath: it counts as a reference, so the
        # connection stays open while the answer is read (as http.client expects).
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _NotFound(Exception):
    pass
