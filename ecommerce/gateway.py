"""The payment provider, reached over HTTP with a bounded timeout; or none.

With PAYMENT_GATEWAY_URL unset the shop is its own "instant" provider: a pay is
charged and paid in the transaction that takes the stock, as the design note's
curl commands expect. With it set, a pay reserves the stock (a pending order),
charges the provider with no transaction open, then confirms or releases
(ecommerce/services/payment.py).

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

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ecommerce.money import format_money

SUCCEEDED = "succeeded"
DECLINED = "declined"


class GatewayUnavailable(Exception):
    """No answer in time, or no answer that means anything: the outcome is unknown."""


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
            answer = self._call("GET", f"/charges/{charge_key(order_id)}", None)
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

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise _NotFound from error
            raise GatewayUnavailable(f"the provider answered HTTP {error.code}") from error
        except (OSError, ValueError) as error:  # timeouts, refused connections, bad JSON
            raise GatewayUnavailable(f"the provider did not answer: {error}") from error


class _NotFound(Exception):
    pass
