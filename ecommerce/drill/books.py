"""The books of one drill phase, checked on the final primary: acknowledged
orders lost, units oversold, keys with two effects, 5xx other than 503, the
invariants of `flask check-invariants`, the longest stretch without a sale; in
a phase through the waiting room, also that every buyer who paid had been
admitted."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from ecommerce.database.failover import normalize_database_url
from ecommerce.drill.storm import TRANSPORT, StormLog
from ecommerce.models import STATUSES_HOLDING_STOCK
from ecommerce.services.invariants import find_violations


@dataclass(frozen=True)
class PhaseItems:
    """The items a phase's storm buys and their initial stock."""

    hot: int
    hot_stock: int
    scarce: int
    scarce_stock: int
    roomed: bool = False  # both behind an open waiting room


def check(result, log: StormLog, url: str, items: PhaseItems) -> None:
    """Fill ``result`` (a run.FaultResult) from the storm's log and the final
    primary at ``url``."""
    events = sorted(log.events)
    result.acknowledged = len(log.acknowledged)
    result.answers = {}
    for _, step, status, code, _ in events:
        name = f"{step} {status if status != TRANSPORT else 'no answer'}" + (
            f" {code}" if code and status >= 400 else ""
        )
        result.answers[name] = result.answers.get(name, 0) + 1
    result.five_xx = sum(1 for _, _, status, _, _ in events if status >= 500 and status != 503)
    sales = [t for t, step, status, _, _ in events if step == "pay" and status in (201, 202)]
    gaps = list(zip([result.t0, *sales], sales, strict=False))
    start, end = max(gaps, key=lambda gap: gap[1] - gap[0], default=(0.0, 0.0))
    result.longest_without_sale_s = end - start
    # Sales back: the end of the longest stretch without one, if the fault
    # fell in it or before it; else the fault cost no stretch longer.
    result.back_after_s = max(0.0, end - result.fault_at) if end > result.fault_at else 0.0
    result.timeline = timeline(events, result.t0)
    if items.roomed:
        result.room = dict(log.room)

    with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT user_id, id FROM orders WHERE user_id LIKE %s", (f"{result.fault}-%",))
        orders: dict[str, list[int]] = {}
        for user, order_id in cur.fetchall():
            orders.setdefault(user, []).append(order_id)
        # Units in orders that hold stock (paid or pending), per item.
        cur.execute(
            "SELECT i.id, i.stock, coalesce(sum(l.quantity) FILTER"
            " (WHERE o.status = ANY(%s)), 0)"
            " FROM items i LEFT JOIN order_lines l ON l.item_id = i.id"
            " LEFT JOIN orders o ON o.id = l.order_id WHERE i.id IN (%s, %s)"
            " GROUP BY i.id, i.stock",
            (list(STATUSES_HOLDING_STOCK), items.hot, items.scarce),
        )
        held = {item: (int(stock), int(sold)) for item, stock, sold in cur.fetchall()}
        if items.roomed:
            result.unadmitted, undone = _unadmitted(cur, result.fault, items)
            if undone:
                result.violations.append(f"{undone} paid places not marked done")
    conn.close()
    result.lost = log.lost_adds + sum(
        1 for user, order_id in log.acknowledged.items() if order_id not in orders.get(user, [])
    )
    result.doubled = sum(1 for ids in orders.values() if len(ids) > 1)
    # Sold beyond the stock, or stock below zero, on either item.
    result.scarce_sold_out = held[items.scarce] == (0, items.scarce_stock)
    result.oversold = sum(
        max(0, sold - initial) + max(0, -int(held[item][0]))
        for item, initial in ((items.hot, items.hot_stock), (items.scarce, items.scarce_stock))
        for _, sold in [held[item]]
    )
    engine = create_engine(normalize_database_url(url))
    try:
        with Session(engine) as session:
            now = dt.datetime.now(dt.UTC)  # the drill's shops run on the wall clock
            result.violations += [str(v) for v in find_violations(session, now)]
    finally:
        engine.dispose()


def _unadmitted(cur, fault: str, items: PhaseItems) -> tuple[int, int]:
    """Of the phase's orders of roomed items: those whose buyer's place was never
    admitted (or who had none), and those whose place the pay did not mark done."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE q.admitted_at IS NULL),"
        " count(*) FILTER (WHERE q.admitted_at IS NOT NULL AND q.done_at IS NULL)"
        " FROM orders o JOIN order_lines l ON l.order_id = o.id"
        " LEFT JOIN queue_places q ON q.item_id = l.item_id AND q.user_id = o.user_id"
        " WHERE o.user_id LIKE %s AND l.item_id IN (%s, %s)",
        (f"{fault}-%", items.hot, items.scarce),
    )
    unadmitted, undone = cur.fetchone()
    return int(unadmitted), int(undone)


def first_sale_after(log: StormLog, at: float) -> float | None:
    """When the first pay sent after ``at`` was answered with a sale."""
    if not at:
        return None
    times = [
        t
        for t, step, status, _, sent in list(log.events)
        if step == "pay" and status in (201, 202) and sent > at
    ]
    return min(times, default=None)


def timeline(events, t0: float, bucket_s: float = 0.5) -> list[dict]:
    buckets: dict[int, dict[str, int]] = {}
    for t, step, status, _, _ in events:
        b = buckets.setdefault(int((t - t0) / bucket_s), {"sales": 0, "busy": 0, "other": 0})
        if step == "pay" and status in (201, 202):
            b["sales"] += 1
        elif status in (503, TRANSPORT):
            b["busy"] += 1
        elif status >= 500:
            b["other"] += 1
    return [
        {
            "t": k * bucket_s,
            "sales_per_s": v["sales"] / bucket_s,
            "busy_per_s": v["busy"] / bucket_s,
            "five_xx_per_s": v["other"] / bucket_s,
        }
        for k, v in sorted(buckets.items())
    ]
