"""What the use cases return: plain values, no JSON and no HTTP.

The API layer renders them (ecommerce/api/render.py). A result that an
Idempotency-Key must replay is stored in the database with :func:`encode` and
read back with the ``decode`` of its type: a lossless record (decimals as
strings, times in ISO 8601 with their offset), so a replay renders to the same
bytes as the first answer. A decoded result has ``replayed`` set: nothing
happened this time, and the API says so (``Idempotent-Replayed: true``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Protocol

from ecommerce.domain import checkout
from ecommerce.money import format_money
from ecommerce.repositories import ItemAccountRow, ItemRow, OrderRecord

#: An item as the catalogue shows it: the repository's row is already a frozen value.
ItemView = ItemRow
#: An item's stock, sales and rules (admin sales figures, the console): likewise.
ItemAccountView = ItemAccountRow


@dataclass(frozen=True)
class LineView:
    item_id: int
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


def total_of(lines: list[LineView]) -> Decimal:
    """What an order's lines cost (the domain's one total)."""
    return checkout.total((line.unit_price, line.quantity) for line in lines)


@dataclass(frozen=True)
class OrderView:
    order_id: int
    user_id: str
    status: str
    total: Decimal
    created_at: dt.datetime
    lines: list[LineView]
    replayed: bool = False
    expires_at: dt.datetime | None = None  # while pending: when the reservation lapses
    # Refunded, and the provider has not confirmed the refund yet (it is sent
    # again by a repeated cancel and by reconcile-payments).
    refund_pending: bool = False

    @classmethod
    def of(cls, order: OrderRecord, replayed: bool = False) -> OrderView:
        return cls(
            order_id=order.id,
            user_id=order.user_id,
            status=order.status,
            total=order.total,
            created_at=order.created_at,
            lines=[LineView(ln.item_id, ln.name, ln.quantity, ln.unit_price) for ln in order.lines],
            replayed=replayed,
            expires_at=order.expires_at,
        )

    def record(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "status": self.status,
            "total": format_money(self.total),
            "created_at": self.created_at.isoformat(),
            "lines": [_line_record(line) for line in self.lines],
        }

    @classmethod
    def decode(cls, raw: bytes) -> OrderView:
        r = json.loads(raw)
        return cls(
            order_id=r["order_id"],
            user_id=r["user_id"],
            status=r["status"],
            total=Decimal(r["total"]),
            created_at=dt.datetime.fromisoformat(r["created_at"]),
            lines=[_line_of(line) for line in r["lines"]],
            replayed=True,
        )


@dataclass(frozen=True)
class CartView:
    """A cart, and each line's item stock and whether its sale is open, as read with
    it (for the checkout quote)."""

    user_id: str
    lines: list[LineView]
    available: dict[int, Decimal]
    # Items whose sale window is closed right now (before it opens or after it ends).
    off_sale: frozenset[int] = frozenset()
    replayed: bool = False

    @property
    def total(self) -> Decimal:
        return total_of(self.lines)

    def in_stock(self, line: LineView) -> bool:
        return self.available[line.item_id] >= line.quantity

    def on_sale(self, line: LineView) -> bool:
        return line.item_id not in self.off_sale

    @property
    def can_pay(self) -> bool:
        return bool(self.lines) and all(
            self.in_stock(line) and self.on_sale(line) for line in self.lines
        )

    def record(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "lines": [_line_record(line) for line in self.lines],
            "available": {str(k): format_money(v) for k, v in self.available.items()},
            "off_sale": sorted(self.off_sale),
        }

    @classmethod
    def decode(cls, raw: bytes) -> CartView:
        r = json.loads(raw)
        return cls(
            user_id=r["user_id"],
            lines=[_line_of(line) for line in r["lines"]],
            available={int(k): Decimal(v) for k, v in r.get("available", {}).items()},
            off_sale=frozenset(r.get("off_sale", [])),
            replayed=True,
        )


def _line_record(line: LineView) -> dict[str, Any]:
    return asdict(line) | {"unit_price": format_money(line.unit_price)}


def _line_of(record: dict[str, Any]) -> LineView:
    return LineView(
        record["item_id"], record["name"], record["quantity"], Decimal(record["unit_price"])
    )


class Recordable(Protocol):
    def record(self) -> dict[str, Any]: ...


def encode(result: Recordable) -> bytes:
    return json.dumps(result.record(), sort_keys=True, separators=(",", ":")).encode()
