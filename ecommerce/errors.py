"""What can go wrong, as plain exceptions with a stable machine-readable code.

Services and repositories raise these; they know nothing of HTTP. The API layer
(ecommerce/api/errors.py) maps each code to a status and the JSON error shape,
and the CLI turns them into usage errors.
"""

from __future__ import annotations

from typing import Any


class ShopError(Exception):
    code = "invalid_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(ShopError):
    code = "invalid_request"


class NotFound(ShopError):
    code = "not_found"


class EmptyCart(ShopError):
    code = "empty_cart"


class InsufficientStock(ShopError):
    code = "insufficient_stock"


class Conflict(ShopError):
    code = "conflict"


class SaleNotStarted(ShopError):
    code = "sale_not_started"


class SaleEnded(ShopError):
    code = "sale_ended"


class QueueRequired(ShopError):
    """An item whose waiting room is open is added or paid for without a valid
    admission (the X-Admission-Token of the buyer's turn)."""

    code = "queue_required"


class LimitExceeded(ShopError):
    """More units than the item's per-buyer limit, counting the buyer's orders."""

    code = "limit_exceeded"


class PaymentDeclined(ShopError):
    """The payment provider declined the charge; the reserved stock went back."""

    code = "payment_declined"


class AmountMismatch(ShopError):
    code = "amount_mismatch"


class OrderTooLarge(ShopError):
    code = "order_too_large"


class ServiceBusy(ShopError):
    """The database could not give us a lock, a connection or an answer in time."""

    code = "busy"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(ShopError):
    """The instance cannot serve yet: its database does not answer, or its schema
    is not at the migrations' head."""

    code = "not_ready"


class Unauthorized(ShopError):
    code = "unauthorized"


class Forbidden(ShopError):
    code = "forbidden"


class IdempotencyKeyInUse(ShopError):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(ShopError):
    code = "idempotency_key_reused"
