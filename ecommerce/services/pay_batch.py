"""The pay's one engine: a batch of buyers in one transaction, the transaction
that must never oversell. Each buyer is all or nothing, each answered exactly
as they would be alone (the rules: ecommerce/domain/checkout.py); a lone pay
is a batch of one (services/payment.py). The Idempotency-Key is honoured in
the same transaction.

Each buyer of a batch is one :class:`_Buyer`: their request, their locked cart
and held units as the batch learns them, and their answer, set by the step that
decides it. The transaction, step by step (the numbering of docs/DESIGN.md,
"The pay, from the blueprint to its SQL"; each step a function below):

1. BEGIN with the timeouts, SET LOCAL (services/transactions.py, UnitOfWork);
2. :func:`_claim_keys`: the Idempotency-Keys' advisory locks and records (a
   replay or a refusal is decided here, before any row lock);
3. :func:`_refuse_marked_sold_out`: once an item is marked sold out
   (services/soldout.py), the buyers whose cart holds it are answered from a
   plain read of their carts (a batch of only them takes no lock and writes
   nothing, so its COMMIT has nothing to flush);
4. :func:`_lock_carts`: every remaining buyer's cart rows, FOR UPDATE OF carts,
   all users in one statement (a batch of several waits for no one's row: a
   buyer whose row another transaction holds is handed back to run alone); a
   buyer without an admission to an item whose waiting room is open is
   refused; then :func:`_refuse_from_the_carts`: a buyer whose amount is not
   the cart's total is refused whatever the item rows say, with no item lock;
5. :func:`_draw_order_ids`: ids for the orders of the buyers who might win,
   before any item lock;
6. :func:`_lock_items`: the union of their items, FOR NO KEY UPDATE, ascending
   id (items marked sold out are not locked), and the units each buyer holds of
   the items with a per-buyer limit;
7. :func:`_allocate`: in arrival order, every rule judged on the locked rows,
   each buyer all or nothing across their lines;
8. :func:`_write`: one statement writes every winner's order, lines, payment,
   key record, deletes their paid cart lines and takes one decrement per item;
9. COMMIT, which releases the locks (a batch of only refusals rolls back
   instead: nothing to flush, no wait for the standby).

Item rows are locked last, so a hot item is held only for steps 6 to 9 (three
round trips and the commit's flush), for every buyer of the batch at once. No
network call happens while locks are held: with a payment provider the order is
written pending, and charged once the transaction has committed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce.domain import checkout
from ecommerce.errors import ShopError
from ecommerce.models import ORDER_STATUS_PAID, ORDER_STATUS_PENDING
from ecommerce.money import format_money
from ecommerce.repositories import (
    CartLineRow,
    CartRepository,
    ItemRepository,
    ItemRow,
    NewKeyRecord,
    NewOrder,
    NewOrderLine,
    OrderRepository,
)
from ecommerce.services import Shop, idempotency, rooms
from ecommerce.services.combining import RunAlone
from ecommerce.services.results import LineView, OrderView, encode, total_of
from ecommerce.services.transactions import Unchanged


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


@dataclass
class _Buyer:
    """One buyer of a batch: their request, what the batch learns of them, and
    their answer (None while they are still in the running)."""

    request: PayRequest
    answer: OrderView | ShopError | RunAlone | None = None
    cart: Sequence[CartLineRow] = ()
    held: dict[int, int] = field(default_factory=dict)  # units in orders, by limited item

    @property
    def user_id(self) -> str:
        return self.request.user_id

    @property
    def in_the_running(self) -> bool:
        return self.answer is None

    @property
    def rules(self) -> checkout.Buyer:
        """The buyer as the rules see them (domain/checkout.py)."""
        return checkout.Buyer(self.user_id, self.request.amount, self.cart, self.held)


@dataclass
class _BatchResult:
    outcomes: list[OrderView | ShopError | RunAlone]
    sold_out: dict[int, str]  # items this batch left at 0 stock: {id: name}


def run_batch(shop: Shop, batch: Sequence[PayRequest]) -> list[OrderView | BaseException]:
    shop.observe_batch("pay", len(batch))
    since = shop.sold_out.epoch()  # before the batch reads any stock
    result = shop.transaction(lambda session: _pay_batch(session, shop, batch), "pay")
    # Marked only once the batch has committed, and not over a newer restock.
    for item_id, name in result.sold_out.items():
        shop.sold_out.mark(item_id, name, since)
    return list(result.outcomes)


def _pay_batch(session: Session, shop: Shop, batch: Sequence[PayRequest]) -> _BatchResult:
    """The batch's transaction, step by step (the numbers of the module's
    docstring and of docs/DESIGN.md; step 1, the timeouts, and step 9, the
    COMMIT, are the transaction's own: services/transactions.py)."""
    # Two instants of the shop's clock: the batch's start, for its keys and the
    # answers from the carts' read; and the moment it has its item rows, at
    # which every rule is judged on them and the orders are made (a sale
    # closed while the batch waited for the rows is closed for it).
    started = shop.clock()
    buyers = [_Buyer(request) for request in batch]
    orders = OrderRepository(session)
    replayed = _claim_keys(session, buyers, started)  # 2
    _refuse_marked_sold_out(session, shop, buyers, started)  # 3
    roomed = _lock_carts(session, shop, buyers)  # 4
    marked = _refuse_from_the_carts(session, shop, buyers, started)  # 4, from the carts' read
    ids = _draw_order_ids(orders, buyers, marked, started)  # 5
    locked = _lock_items(session, buyers, marked)  # 6
    at = shop.clock()
    allocation = _allocate(orders, buyers, locked, marked, ids, at)  # 7
    written = _write(session, shop, orders, buyers, allocation, ids, roomed, at)  # 8
    sold_out = {i: row.name for i, row in locked.items() if allocation.left[i] == 0}
    outcomes = [buyer.answer for buyer in buyers]
    assert all(outcome is not None for outcome in outcomes)
    result = _BatchResult(outcomes, sold_out)  # type: ignore[arg-type]
    if not written and not replayed:
        raise Unchanged(result)  # only refusals: rolled back, nothing to flush
    return result


def _claim_keys(session: Session, buyers: list[_Buyer], at: dt.datetime) -> bool:
    """2. The Idempotency-Keys (never twice in one batch: the combiner lets one
    request per key be in flight): a replay or a refusal is decided here.
    Whether any buyer's earlier result was replayed."""
    claimed = idempotency.claim(session, [b.request for b in buyers], OrderView.decode, at)
    for buyer, outcome in zip(buyers, claimed, strict=True):
        buyer.answer = outcome
    return any(isinstance(outcome, OrderView) for outcome in claimed)


def _refuse_marked_sold_out(
    session: Session, shop: Shop, buyers: list[_Buyer], at: dt.datetime
) -> None:
    """3. After a sold-out mark, the buyers whose cart holds a marked item are
    answered from one plain read of their carts: they take no lock, and a batch
    of only them assigns no transaction id, so its COMMIT flushes nothing."""
    running = [buyer for buyer in buyers if buyer.in_the_running]
    if not (shop.sold_out.any() and running):
        return
    seen = CartRepository(session).lines_many(buyer.user_id for buyer in running)
    marked = shop.sold_out.marked(session, {ln.item_id for cart in seen.values() for ln in cart})
    if not marked:
        return
    for buyer in running:
        as_seen = checkout.Buyer(buyer.user_id, buyer.request.amount, seen.get(buyer.user_id, []))
        buyer.answer = checkout.sold_out_refusal(as_seen, marked, at)


def _lock_carts(session: Session, shop: Shop, buyers: list[_Buyer]) -> frozenset[int]:
    """4. Every remaining buyer's cart rows, locked in one statement. A batch of
    one waits for its rows as any transaction would; a batch of several waits
    for none: a buyer one of whose rows another transaction holds (the same
    buyer paying from another worker) is handed back to run alone (RunAlone).
    A buyer whose cart holds an item whose waiting room is open, with no
    admission to it, is refused (409 queue_required). The items whose room is
    open (this worker's view: at most one plain read per QUEUE_REFRESH_MS)."""
    roomed = rooms.roomed_items(session, shop)
    running = [buyer for buyer in buyers if buyer.in_the_running]
    if not running:
        return roomed
    carts = CartRepository(session)
    users = [buyer.user_id for buyer in running]
    if len(buyers) == 1:
        locked = carts.lock_for_pay(users)
    else:
        locked, held = carts.lock_for_pay_skipping_held(users)
        for buyer in running:
            if buyer.user_id in held:
                buyer.answer = RunAlone()
    for buyer in running:
        buyer.cart = locked.get(buyer.user_id, [])
    if roomed:
        _refuse_unadmitted(session, shop, buyers, roomed)
    return roomed


def _refuse_unadmitted(
    session: Session, shop: Shop, buyers: list[_Buyer], roomed: frozenset[int]
) -> None:
    """4, the admissions: an admission counts while its place is admitted
    (not paid, left or lapsed): one read of the batch's places."""
    running = [buyer for buyer in buyers if buyer.in_the_running]
    wanted = {id(b): {line.item_id for line in b.cart} & roomed for b in running}
    places = rooms.admitted_places(
        session, shop, [(b.user_id, item) for b in running for item in wanted[id(b)]]
    )
    for buyer in running:
        tokens = buyer.request.admission_tokens
        buyer.answer = rooms.admission_refusal(
            shop, buyer.user_id, wanted[id(buyer)], tokens, roomed, places
        )


def _refuse_from_the_carts(
    session: Session, shop: Shop, buyers: list[_Buyer], at: dt.datetime
) -> dict[int, str]:
    """4, from the carts' read: a buyer whose amount is not their cart's total
    (or whose total is too large) is refused whatever the item rows say:
    answered from the cart's read, with no item lock (a user twice in the
    batch is judged in arrival order, by the allocation). The items of the
    carts marked sold out."""
    running = [buyer for buyer in buyers if buyer.in_the_running]
    marked = shop.sold_out.marked(session, {ln.item_id for b in running for ln in b.cart})
    users = Counter(buyer.user_id for buyer in running)
    for buyer in running:
        if users[buyer.user_id] == 1 and checkout.hopeless(buyer.rules):
            available = checkout.stock_as_read(buyer.cart, marked)
            buyer.answer = checkout.refusal(buyer.rules, available, None, at)
    return marked


def _draw_order_ids(
    orders: OrderRepository, buyers: list[_Buyer], marked: dict[int, str], at: dt.datetime
) -> list[int]:
    """5. Order ids for the buyers who might win, drawn before any item row is
    locked; a buyer refused even with stock enough draws none."""
    candidates = sum(
        1
        for buyer in buyers
        if buyer.in_the_running and not checkout.refused_even_with_stock(buyer.rules, marked, at)
    )
    return orders.next_ids(candidates) if candidates else []


def _lock_items(
    session: Session, buyers: list[_Buyer], marked: dict[int, str]
) -> dict[int, ItemRow]:
    """6. The union of the remaining buyers' items, locked in ascending id
    (items marked sold out are not touched); and, for the items with a
    per-buyer limit, the units each buyer holds in orders (the cart rows are
    locked, so those cannot change). The locked rows, by id."""
    running = [buyer for buyer in buyers if buyer.in_the_running]
    to_lock = {line.item_id for buyer in running for line in buyer.cart} - marked.keys()
    locked = {row.id: row for row in ItemRepository(session).lock(to_lock)} if to_lock else {}
    limited = {item for b in running for item in checkout.limited(b.cart, locked)}
    held = _held(session, {buyer.user_id for buyer in running}, limited)
    for buyer in running:
        buyer.held = held.get(buyer.user_id, {})
    return locked


def _allocate(
    orders: OrderRepository,
    buyers: list[_Buyer],
    locked: dict[int, ItemRow],
    marked: dict[int, str],
    ids: list[int],
    at: dt.datetime,
) -> checkout.Allocation:
    """7. Allocate in arrival order, every rule judged on the locked rows, each
    buyer all or nothing (domain/checkout.py:allocate); a refused buyer is
    answered. A rule that changed between the carts' read and the item lock (an
    admin opened a window or raised a limit) may let more win than drew ids in
    step 5: the few missing ones are drawn now (into ``ids``)."""
    running = [buyer for buyer in buyers if buyer.in_the_running]
    available = {item_id: row.stock for item_id, row in locked.items()}
    available |= dict.fromkeys(marked, Decimal(0))
    allocation = checkout.allocate([b.rules for b in running], available, locked, at)
    for buyer, refused in zip(running, allocation.refusals, strict=True):
        buyer.answer = refused
    if len(allocation.winners) > len(ids):
        ids += orders.next_ids(len(allocation.winners) - len(ids))
    return allocation


def _write(
    session: Session,
    shop: Shop,
    orders: OrderRepository,
    buyers: list[_Buyer],
    allocation: checkout.Allocation,
    ids: list[int],
    roomed: frozenset[int],
    at: dt.datetime,
) -> bool:
    """8. The winners written, one statement: every winner's order, lines,
    payment and key record, exactly the paid cart lines deleted, one decrement
    per item (the COMMIT follows in shop.transaction); a winner's admissions to
    the waiting rooms of what they bought are done. Whether anything was
    written."""
    running = [buyer for buyer in buyers if buyer.answer is None]  # the winners
    if not running:
        return False
    reserve_s = _reserve_s(shop)
    new_orders: list[NewOrder] = []
    new_keys: list[NewKeyRecord] = []
    for buyer, order_id in zip(running, ids, strict=False):
        request = buyer.request
        lines = [LineView(ln.item_id, ln.name, ln.quantity, ln.price) for ln in buyer.cart]
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
        buyer.answer = order
    orders.write_paid(new_orders, new_keys, shop.idempotency_ttl_s, allocation.taken, at, reserve_s)
    admissions_done = [
        (buyer.user_id, line.item_id)
        for buyer in running
        for line in buyer.cart
        if line.item_id in roomed
    ]
    if admissions_done:
        rooms.mark_paid(session, admissions_done, at)
    return True


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
