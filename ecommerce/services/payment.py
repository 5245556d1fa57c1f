"""Paying for a cart: the transaction that must never oversell.

``pay`` is the use case, and :func:`_pay_batch` its one engine: a batch of
buyers in one transaction, each buyer all or nothing, each answered exactly as
they would be alone (the rules: ecommerce/domain/checkout.py). With
PAY_COMBINING on (the default) the pays that arrive together form the batch
(ecommerce/services/combining.py); off, each pay is a batch of one in its
request's thread. The Idempotency-Key is honoured in the same transaction.

The batch, one transaction:
1. the batch's Idempotency-Keys: try their advisory locks, read their records
   (a replay or a refusal is decided here, before any row lock);
2. once an item is marked sold out (ecommerce/services/soldout.py), read the
   buyers' carts without a lock and refuse those that hold a marked item (a
   batch of only them takes no lock and writes nothing, so its COMMIT has
   nothing to flush); then lock every remaining buyer's cart rows (FOR UPDATE
   OF carts), all users in one statement: a second pay of the same cart waits
   here, then finds the cart empty (a batch of several waits for no one's
   row: a buyer whose row another transaction holds is handed back to run
   alone, :func:`_lock_carts`);
   A buyer whose cart holds an item whose waiting room is open needs an
   admission to it (ecommerce/services/rooms/): refused here otherwise;
3. answer from the cart's read a buyer whose amount is not the cart's total
   (refused whatever the item rows say): no item lock for them;
4. draw ids for the orders of the buyers who might win (before any item
   lock; a buyer refused whatever the item rows say draws none);
5. lock the union of their items, FOR NO KEY UPDATE, ascending id (items
   marked sold out are not locked: their buyers are refused), and read the
   units each buyer holds of the items with a per-buyer limit;
6. allocate in arrival order, every rule judged on the locked rows, each buyer
   all or nothing across their lines (:func:`ecommerce.domain.checkout.allocate`);
7. one statement writes every winner's order, lines, payment, key record,
   deletes their paid cart lines and takes one decrement per item;
8. commit, which releases the locks (a batch of only refusals rolls back
   instead: nothing to flush, no wait for the standby).
Item rows are locked last, so a hot item is held only for step 5 to 8 (three
round trips and the commit's flush), for every buyer of the batch at once. No
network call happens while locks are held: with a payment provider the order is
written pending, and charged once the transaction has committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce import metrics
from ecommerce.domain import checkout
from ecommerce.errors import (
    InsufficientStock,
    ServiceBusy,
    ShopError,
)
from ecommerce.models import (
    ORDER_STATUS_PAID,
    ORDER_STATUS_PENDING,
)
from ecommerce.money import format_money
from ecommerce.repositories import (
    CartLineRow,
    CartRepository,
    ItemRepository,
    NewKeyRecord,
    NewOrder,
    NewOrderLine,
    OrderRepository,
)
from ecommerce.services import Shop, charging, idempotency, rooms
from ecommerce.services.combining import Combiner, RunAlone, value_of
from ecommerce.services.results import LineView, OrderView, encode, total_of
from ecommerce.services.transactions import Unchanged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PayRequest:
    user_id: str
    amount: Decimal
    key: str | None
    # X-Admission-Token: judged in the batch, only when a waiting room is open.
    admission_tokens: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return idempotency.fingerprint("pay", self.user_id, {"amount": format_money(self.amount)})


def pay(
    shop: Shop,
    user_id: str,
    amount: Decimal,
    idempotency_key: str | None = None,
    admission_tokens: Sequence[str] = (),
) -> OrderView:
    """Pay exactly ``amount`` for the user's whole cart; returns the paid order.
    A cart that holds an item whose waiting room is open needs one of
    ``admission_tokens`` admitting the buyer to it (judged on the locked cart)."""
    started = time.monotonic()
    try:
        request = PayRequest(user_id, amount, idempotency_key, tuple(admission_tokens))
        if shop.combining is None:
            order = _pay_alone(shop, request)
        else:
            # The same key while its first request is queued or in a batch of this
            # process: 409 at once, as the advisory lock answers across processes.
            key = (user_id, idempotency_key) if idempotency_key is not None else None
            order = _combiner(shop).submit(request, key)
        if shop.gateway is not None:
            order = charging.charge_and_confirm(shop, order, request.key, started)
    except ServiceBusy:
        metrics.count_pay("busy", ServiceBusy.code)
        raise
    except InsufficientStock:
        metrics.count_pay("sold_out", InsufficientStock.code)
        raise
    except ShopError as refused:
        metrics.count_pay("refused", refused.code)
        raise
    if order.status == ORDER_STATUS_PENDING:
        metrics.count_pay("pending", "")
    else:
        metrics.count_pay("paid", "replayed" if order.replayed else "")
    return order


def _combiner(shop: Shop) -> Combiner[PayRequest, OrderView]:
    assert shop.combining is not None
    return shop.combiner(
        "pay-combiner",
        shop.combining,
        run_batch=lambda batch: _run_batch(shop, batch),
        run_alone=lambda request: _pay_alone(shop, request),
        key_in_use=idempotency.in_use,
    )


def _pay_alone(shop: Shop, request: PayRequest) -> OrderView:
    """A pay as a batch of one, in the request's own thread."""
    return value_of(_run_batch(shop, [request])[0])


# --- The engine: a batch of buyers, one transaction ------------------------------


@dataclass
class _BatchResult:
    outcomes: list[OrderView | ShopError | RunAlone]
    sold_out: dict[int, str]  # items this batch left at 0 stock: {id: name}


def _run_batch(shop: Shop, batch: Sequence[PayRequest]) -> list[OrderView | BaseException]:
    shop.observe_batch("pay", len(batch))
    since = shop.sold_out.epoch()  # before the batch reads any stock
    result = shop.transaction(lambda session: _pay_batch(session, shop, batch), "pay")
    # Marked only once the batch has committed, and not over a newer restock.
    for item_id, name in result.sold_out.items():
        shop.sold_out.mark(item_id, name, since)
    return list(result.outcomes)


def _pay_batch(session: Session, shop: Shop, batch: Sequence[PayRequest]) -> _BatchResult:
    # The batch's one instant: keys, sale windows, the orders' times, admissions.
    at = shop.clock()
    # 1. Idempotency-Keys (never twice in one batch: the combiner lets one
    # request per key be in flight).
    outcomes: list[OrderView | ShopError | RunAlone | None] = idempotency.claim(
        session, batch, OrderView.decode, at
    )
    replayed = any(isinstance(outcome, OrderView) for outcome in outcomes)

    # 2. Carts, every user at once. After a sold-out mark, buyers whose cart holds
    # a marked item are refused from a plain read first: they take no lock, and a
    # batch of only them assigns no transaction id, so its COMMIT flushes nothing.
    active = [n for n in range(len(batch)) if outcomes[n] is None]
    if shop.sold_out.any() and active:
        _refuse_sold_out(session, shop, batch, active, outcomes, at)
        active = [n for n in active if outcomes[n] is None]
    # The items whose waiting room is open (this worker's view: at most one
    # plain read per QUEUE_REFRESH_MS, on the batch's own connection).
    roomed = rooms.roomed_items(session, shop)
    carts = _lock_carts(session, batch, active, outcomes)
    if roomed:
        _refuse_unadmitted(session, shop, batch, active, carts, outcomes, roomed)
    active = [n for n in active if outcomes[n] is None]
    buyers = [
        checkout.Buyer(batch[n].user_id, batch[n].amount, carts.get(batch[n].user_id, []))
        for n in active
    ]

    # 3. A buyer whose amount is not their cart's total is refused whatever the
    # item rows say: answered from the cart's read, with no item lock (a user
    # twice in the batch is judged in arrival order, below).
    wanted = {line.item_id for buyer in buyers for line in buyer.cart}
    marked = shop.sold_out.marked(session, wanted)
    users = Counter(buyer.user_id for buyer in buyers)
    for position, buyer in enumerate(buyers):
        if users[buyer.user_id] == 1 and checkout.hopeless(buyer):
            available = checkout.stock_as_read(buyer.cart, marked)
            outcomes[active[position]] = checkout.refusal(buyer, available, None, at)
    kept = [p for p in range(len(active)) if outcomes[active[p]] is None]
    active, buyers = [active[p] for p in kept], [buyers[p] for p in kept]

    # 4. Order ids for the buyers who might win, drawn before any item row is
    # locked; a buyer refused whatever the item rows say draws none.
    wanted = {line.item_id for buyer in buyers for line in buyer.cart}
    order_rows = OrderRepository(session)
    candidates = sum(
        1 for buyer in buyers if not checkout.refused_even_with_stock(buyer, marked, at)
    )
    drawn = order_rows.next_ids(candidates) if candidates else []

    # 5. Lock the items (ascending id); sold-out marked ones are not touched.
    to_lock = wanted - marked.keys()
    locked = {row.id: row for row in ItemRepository(session).lock(to_lock)} if to_lock else {}
    available = {item_id: row.stock for item_id, row in locked.items()}
    available |= dict.fromkeys(marked, Decimal(0))
    # Per-buyer limits: the cart rows are locked, so held units cannot change.
    limited = {item for buyer in buyers for item in checkout.limited(buyer.cart, locked)}
    held = _held(session, {buyer.user_id for buyer in buyers}, limited)
    buyers = [replace(buyer, held=held.get(buyer.user_id, {})) for buyer in buyers]

    # 6. Allocate in arrival order, every rule judged on the locked rows; each
    # buyer all or nothing.
    allocation = checkout.allocate(buyers, available, locked, at)
    winners = allocation.winners
    if len(winners) > len(drawn):
        # A rule changed between the carts' read and the item lock (an admin
        # opened a window or raised a limit): the few missing ids, drawn now.
        drawn += order_rows.next_ids(len(winners) - len(drawn))

    reserve_s = _reserve_s(shop)
    new_orders: list[NewOrder] = []
    new_keys: list[NewKeyRecord] = []
    for position, refused in enumerate(allocation.refusals):
        if refused is not None:
            outcomes[active[position]] = refused
    for position, order_id in zip(winners, drawn, strict=False):
        request = batch[active[position]]
        lines = [
            LineView(ln.item_id, ln.name, ln.quantity, ln.price) for ln in buyers[position].cart
        ]
        order = _new_order(order_id, request.user_id, total_of(lines), at, lines, reserve_s)
        new_orders.append(
            NewOrder(
                order.order_id,
                order.user_id,
                order.total,
                [NewOrderLine(ln.item_id, ln.quantity, ln.unit_price) for ln in lines],
            )
        )
        if request.key is not None:
            new_keys.append(
                NewKeyRecord(request.user_id, request.key, request.fingerprint, encode(order))
            )
        outcomes[active[position]] = order

    # 7. One statement writes it all (COMMIT follows in shop.transaction); a
    # winner's admissions to the waiting rooms of what they bought are done.
    if new_orders:
        order_rows.write_paid(
            new_orders, new_keys, shop.idempotency_ttl_s, allocation.taken, at, reserve_s
        )
        admissions_done = [
            (buyers[position].user_id, line.item_id)
            for position in winners
            for line in buyers[position].cart
            if line.item_id in roomed
        ]
        if admissions_done:
            rooms.mark_paid(session, admissions_done, at)

    sold_out = {i: row.name for i, row in locked.items() if allocation.left[i] == 0}
    assert all(o is not None for o in outcomes)
    result = _BatchResult(outcomes, sold_out)  # type: ignore[arg-type]
    if not new_orders and not replayed:
        raise Unchanged(result)  # only refusals: rolled back, nothing to flush
    return result


def _lock_carts(
    session: Session,
    batch: Sequence[PayRequest],
    active: Sequence[int],
    outcomes: list[OrderView | ShopError | RunAlone | None],
) -> dict[str, list[CartLineRow]]:
    """The active buyers' carts, locked. A batch of one waits for its cart's
    rows as any transaction would. A batch of several waits for none: a buyer
    one of whose cart rows another transaction holds (the same buyer paying from
    another worker, say) is handed back to run alone (RunAlone), so no other
    buyer of the batch waits for that row."""
    if not active:
        return {}
    carts = CartRepository(session)
    users = [batch[n].user_id for n in active]
    if len(batch) == 1:
        return carts.lock_for_pay(users)
    locked, held = carts.lock_for_pay_skipping_held(users)
    for n in active:
        if batch[n].user_id in held:
            outcomes[n] = RunAlone()
    return locked


def _refuse_unadmitted(
    session: Session,
    shop: Shop,
    batch: Sequence[PayRequest],
    active: Sequence[int],
    carts: dict[str, list[CartLineRow]],
    outcomes: list[OrderView | ShopError | RunAlone | None],
    roomed: frozenset[int],
) -> None:
    """A buyer whose locked cart holds an item whose waiting room is open, with
    no admission to it, is refused (409 queue_required): no item lock, nothing
    written. An admission counts while its place is admitted (not paid, left
    or lapsed): one read of the batch's places."""
    waiting = [n for n in active if outcomes[n] is None]
    wanted = {
        n: {line.item_id for line in carts.get(batch[n].user_id, [])} & roomed for n in waiting
    }
    places = rooms.admitted_places(
        session, shop, [(batch[n].user_id, item) for n in waiting for item in wanted[n]]
    )
    for n in waiting:
        request = batch[n]
        outcomes[n] = rooms.admission_refusal(
            shop, request.user_id, wanted[n], request.admission_tokens, roomed, places
        )


def _refuse_sold_out(
    session: Session,
    shop: Shop,
    batch: Sequence[PayRequest],
    active: Sequence[int],
    outcomes: list[OrderView | ShopError | RunAlone | None],
    at: dt.datetime,
) -> None:
    """Answer, from one plain read of their carts, the buyers of ``active`` whose
    cart holds an item marked sold out (judged at ``at``)."""
    seen = CartRepository(session).lines_many(batch[n].user_id for n in active)
    marked = shop.sold_out.marked(session, {ln.item_id for cart in seen.values() for ln in cart})
    if not marked:
        return
    for n in active:
        request = batch[n]
        buyer = checkout.Buyer(request.user_id, request.amount, seen.get(request.user_id, []))
        outcomes[n] = checkout.sold_out_refusal(buyer, marked, at)


def _held(session: Session, users: Iterable[str], limited: set[int]) -> dict[str, dict[int, int]]:
    """Units held in orders, per user and item, of the ``limited`` items (those
    with a per-buyer limit; no statement when there are none)."""
    if not limited:
        return {}
    held: dict[str, dict[int, int]] = {}
    for (user, item), units in OrderRepository(session).held_units(users, limited).items():
        held.setdefault(user, {})[item] = units
    return held


def _reserve_s(shop: Shop) -> int | None:
    """With a payment provider, orders are written pending for this long."""
    return shop.reservation_ttl_s if shop.gateway is not None else None


def _new_order(
    order_id: int,
    user_id: str,
    total: Decimal,
    created_at: dt.datetime,
    lines: list[LineView],
    reserve_s: int | None,
) -> OrderView:
    if reserve_s is None:
        return OrderView(order_id, user_id, ORDER_STATUS_PAID, total, created_at, lines)
    expires_at = created_at + dt.timedelta(seconds=reserve_s)  # as written
    return OrderView(
        order_id, user_id, ORDER_STATUS_PENDING, total, created_at, lines, expires_at=expires_at
    )
