"""The operator's console: one-time sign-in links and the live picture of the sale.

The picture comes from the database (stock, units by order status, recent
sales, pending reservations, the waiting rooms of the items shown) and from
the shop's own metrics (refusals by
code, pay latency, combined-pay batch size), never from a bookkeeping of its
own. :class:`Feed` turns the metrics' cumulative counters into per-interval
figures for one viewer.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from ecommerce.domain import rules
from ecommerce.errors import Unauthorized
from ecommerce.observability import metrics
from ecommerce.repositories import (
    ConsoleLinkRepository,
    ConsoleRepository,
    DatabaseStateRow,
    ItemAccountRow,
    ItemRepository,
)
from ecommerce.repositories.rooms import RoomRepository, RoomRow
from ecommerce.services import Shop, balancer
from ecommerce.services.rooms import RoomView, fronts, room_view

#: Items shown at most.
MAX_ITEMS = 50


def issue_link(shop: Shop, admin: str, ttl_s: int) -> str:
    """A one-time sign-in nonce for ``admin``, good for ``ttl_s`` seconds."""
    nonce = secrets.token_urlsafe(24)
    shop.transaction(
        lambda s: ConsoleLinkRepository(s).add(nonce, admin, ttl_s, shop.clock()), "console_link"
    )
    return nonce


def redeem_link(shop: Shop, nonce: str) -> str:
    """The admin the link was for; Unauthorized if it is unknown, used or expired."""
    admin = shop.transaction(
        lambda s: ConsoleLinkRepository(s).redeem(nonce, shop.clock()), "console_login"
    )
    if admin is None:
        raise Unauthorized("this sign-in link is not valid: it expired or was already used")
    return admin


#: The window the rates, latencies and batch sizes are taken over.
WINDOW_S = 10.0


@dataclass(frozen=True)
class Snapshot:
    """The shop at one moment, as the console shows it (rendered by the API)."""

    at: dt.datetime
    items: list[ItemAccountRow]
    off_sale: frozenset[int]  # items whose sale window is closed right now
    refusals_per_s: dict[str, float]  # by code ("busy" for 503s), over the window
    pay_latency_s: tuple[float | None, float | None]  # p50, p99 over the window
    batch_size: float | None  # mean buyers per combined pay over the window
    pending: int
    next_expiry: dt.datetime | None
    database: DatabaseStateRow | None = None  # the server reached, its role, its standbys
    instances: list[balancer.Instance] | None = None  # behind the balancer, if configured
    rooms: dict[int, RoomView] = field(default_factory=dict)  # by item, those that have one


@dataclass
class Feed:
    """One viewer's stream of snapshots (a second apart). Counters are cumulative
    in the metrics; the feed keeps the last WINDOW_S of readings to turn them into
    rates and recent latencies."""

    shop: Shop
    readings: deque[tuple[float, metrics.PayFigures]] = field(default_factory=deque)

    def snapshot(self) -> Snapshot:
        """The shop now. The open rooms are advanced first when due, as any
        request of their lines does; their figures are then read with the items,
        in one transaction."""
        now = self.shop.clock()

        def read(
            session: Session,
        ) -> tuple[list[ItemAccountRow], tuple[int, Any], DatabaseStateRow, dict[int, RoomRow]]:
            items = ItemRepository(session).accounts(MAX_ITEMS, now)
            rooms = RoomRepository(session).rooms_of(i.id for i in items)
            console = ConsoleRepository(session)
            return items, console.pending(), console.database(), rooms

        fronts(self.shop)
        items, (pending, next_expiry), database, rooms = self.shop.transaction(
            read, "console_snapshot"
        )
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
        return Snapshot(
            at=now,
            items=items,
            off_sale=frozenset(i.id for i in items if not rules.on_sale(i, now)),
            refusals_per_s={k: v / interval for k, v in sorted(refusals.items())},
            pay_latency_s=(
                metrics.quantile(recent_buckets, 0.5),
                metrics.quantile(recent_buckets, 0.99),
            ),
            batch_size=(figures.batch_sum - before.batch_sum) / batches if batches else None,
            pending=pending,
            next_expiry=next_expiry,
            database=database,
            instances=balancer.instances(self.shop.balancer_stats_url),
            rooms={item: room_view(row) for item, row in rooms.items()},
        )
