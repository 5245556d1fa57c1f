"""The shop's invariants, checked from the data alone (`flask check-invariants`,
the simulator and the tests all use this module).

* stock is never negative;
* conservation: for every item, units received (arrivals in the stock ledger)
  minus units in orders that hold stock (pending, paid) equals current stock —
  no unit sold twice, none lost;
* an order that gave its stock back (payment_failed, expired, cancelled,
  refunded) has a return movement of exactly its units, per line; no other
  order has one;
* every order has lines and a total equal to the sum of its lines; a paid or
  refunded order has exactly one payment of its total, other orders none; a
  refunded order has a refund of its total, other orders none;
* no cart line points at a missing item;
* no order is still pending more than :data:`SWEEP_GRACE` after its expiry
  (`flask release-expired` runs every minute from cron, see docs/OPERATIONS.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.repositories.invariants import SWEEP_GRACE as SWEEP_GRACE
from ecommerce.repositories.invariants import InvariantRepository
from ecommerce.services import Shop, settlement


@dataclass(frozen=True)
class Violation:
    check: str
    row: dict[str, object]

    def __str__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.row.items())
        return f"{self.check}: {fields}"


@dataclass(frozen=True)
class ItemBook:
    """One item's stock account."""

    item_id: int
    received: Decimal
    in_orders: Decimal
    stock: Decimal

    @property
    def oversold(self) -> Decimal:
        """Units in orders beyond what ever arrived: sold that did not exist."""
        return max(Decimal(0), self.in_orders - self.received)

    @property
    def unexplained(self) -> Decimal:
        """Units gone from stock (or added to it) that no order line or ledger row explains."""
        return self.received - self.in_orders - self.stock


def find_violations(session: Session, now: dt.datetime) -> list[Violation]:
    """Every violation of the shop's invariants at ``now`` (a pending order is
    past its expiry by then), read on ``session``."""
    return [
        Violation(found.check, found.row) for found in InvariantRepository(session).violations(now)
    ]


def check(shop: Shop) -> list[Violation]:
    """Every violation of the shop's invariants, read in one transaction; with a
    payment provider, also where its view of the money disagrees with the orders
    (it keeps money exactly for the paid orders: settlement.provider_disagreements)."""
    now = shop.clock()
    violations = shop.transaction(lambda s: find_violations(s, now), "check_invariants")
    if shop.gateway is not None:
        violations += [
            Violation("provider_disagrees", {"order": found})
            for found in settlement.provider_disagreements(shop)
        ]
    return violations


def books(shop: Shop, item_ids: Iterable[int]) -> list[ItemBook]:
    """The stock account of each of these items, read in one transaction."""

    def work(session: Session) -> list[ItemBook]:
        return [
            ItemBook(row.item_id, row.received, row.in_orders, row.stock)
            for row in InvariantRepository(session).books(item_ids)
        ]

    return shop.transaction(work, "stock_books")
