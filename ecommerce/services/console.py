"""The operator's console: one-time sign-in links and the live picture of the sale.

The picture comes from the database (stock, units by order status, recent
sales, pending reservations) and from the shop's own metrics (refusals by
code, pay latency, combined-pay batch size), never from a bookkeeping of its
own. :class:`Feed` turns the metrics' cumulative counters into per-interval
figures for one viewer.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ecommerce import metrics
from ecommerce.errors import Unauthorized
from ecommerce.money import format_money
from ecommerce.repositories import ConsoleLinkRepository, ConsoleRepository
from ecommerce.services import Shop, rules

#: Items shown at most.
MAX_ITEMS = 50


def issue_link(shop: Shop, admin: str, ttl_s: int) -> str:
    """A one-time sign-in nonce for ``admin``, good for ``ttl_s`` seconds."""
    nonce = secrets.token_urlsafe(24)
    shop.transaction(lambda s: ConsoleLinkRepository(s).add(nonce, admin, ttl_s), "console_link")
    return nonce


def redeem_link(shop: Shop, nonce: str) -> str:
    """The admin the link was for; Unauthorized if it is unknown, used or expired."""
    admin = shop.transaction(lambda s: ConsoleLinkRepository(s).redeem(nonce), "console_login")
    if admin is None:
        raise Unauthorized("this sign-in link is not valid: it expired or was already used")
    return admin


def _time(at: Any) -> str | None:
    return at.isoformat() if at is not None else None


#: The window the rates, latencies and batch sizes are taken over.
WINDOW_S = 10.0


@dataclass
class Feed:
    """One viewer's stream of snapshots (a second apart). Counters are cumulative
    in the metrics; the feed keeps the last WINDOW_S of readings to turn them into
    rates and recent latencies."""

    shop: Shop
    readings: deque[tuple[float, metrics.PayFigures]] = field(default_factory=deque)

    def snapshot(self) -> dict[str, Any]:
        def read(session: Any) -> tuple[Any, Any]:
            repository = ConsoleRepository(session)
            return repository.items(MAX_ITEMS), repository.pending()

        items, (pending, next_expiry) = self.shop.transaction(read, "console_snapshot")
        now = rules.now()
        figures = metrics.pay_figures()
        taken = time.monotonic()
        self.readings.append((taken, figures))
        while len(self.readings) > 1 and taken - self.readings[0][0] > WINDOW_S:
            self.readings.popleft()
        then, before = self.readings[0]
        interval = max(taken - then, 1.0)

        refusals: dict[str, float] = {}
        for (outcome, code), count in figures.outcomes.items():
            if outcome == "paid":
                continue
            delta = count - before.outcomes.get((outcome, code), 0)
            name = "busy" if outcome == "busy" else code
            refusals[name] = refusals.get(name, 0) + delta
        earlier = dict(before.latency_buckets)
        recent_buckets = [(b, c - earlier.get(b, 0)) for b, c in figures.latency_buckets]
        batches = figures.batch_count - before.batch_count
        return {
            "at": now.isoformat(),
            "items": [
                {
                    "id": i.id,
                    "name": i.name,
                    "price": format_money(i.price),
                    "available": format_money(i.available),
                    "reserved": i.reserved,
                    "sold": i.sold,
                    "refunded": i.refunded,
                    "pays_per_s": round(i.recent / 10, 1),
                    "per_user_limit": i.per_user_limit,
                    "sale_starts_at": _time(i.sale_starts_at),
                    "sale_ends_at": _time(i.sale_ends_at),
                    "on_sale": rules.on_sale(i, now),
                }
                for i in items
            ],
            "pays_per_s": round(sum(i.recent for i in items) / 10, 1),
            "refusals_per_s": {k: round(v / interval, 1) for k, v in sorted(refusals.items())},
            "pay_latency_ms": {
                "p50": _ms(metrics.quantile(recent_buckets, 0.5)),
                "p99": _ms(metrics.quantile(recent_buckets, 0.99)),
            },
            "batch_size": round((figures.batch_sum - before.batch_sum) / batches, 1)
            if batches
            else None,
            "pending": pending,
            "next_expiry": _time(next_expiry),
        }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None
