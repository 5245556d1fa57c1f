"""Paying for a cart: the transaction that must never oversell.

``pay`` is the use case. With PAY_COMBINING on (the default) it hands the pay
to this process's combiner (ecommerce/services/combining.py), which runs the
pays that arrive together as one transaction (:func:`_pay_batch`); otherwise,
and for every buyer of a batch that failed unexpectedly, it runs alone
(:func:`_pay`). Either way each buyer gets exactly the answer they would get
alone, and an Idempotency-Key is honoured in the same transaction as the effect.

One buyer alone, all or nothing, in one transaction:
0. once an item is marked sold out (ecommerce/services/soldout.py), read the
   cart without a lock first: a cart that holds a marked item is refused there;
1. lock the user's cart rows (FOR UPDATE OF carts) and read their prices: a
   second pay of the same cart waits here, then finds the cart empty;
2. refuse unless the amount is exactly the total (reporting short stock first);
3. write the order, its lines and its payment, and delete the paid cart lines,
   in one statement;
4. take the stock through the configured strategy: it locks the item rows in
   ascending id order and refuses, naming every short item, if any line is
   short; a refusal rolls back everything above;
5. commit, which releases the locks.

A batch of buyers, one transaction:
1. the batch's Idempotency-Keys: try their advisory locks, read their records
   (a replay or a refusal is decided here, before any row lock);
2. once an item is marked sold out, read the remaining buyers' carts without
   a lock and refuse those that hold a marked item (a batch of only them takes
   no lock and writes nothing, so its COMMIT has nothing to flush); then lock
   every remaining buyer's cart rows, all users in one statement;
3. draw ids for the orders of the buyers who might win (before any item
   lock; a buyer refused whatever the item rows say draws none);
4. lock the union of their items, FOR NO KEY UPDATE, ascending id (items
   marked sold out are not locked: their buyers are refused);
5. allocate in arrival order, each buyer all or nothing across their lines;
6. one statement writes every winner's order, lines, payment, key record,
   deletes their paid cart lines and takes one decrement per item;
7. commit.
Item rows are locked last, so a hot item is held only for step 4 to 7 (three
round trips and the commit's flush), for every buyer of the batch at once. No
network call happens while locks are held.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy.orm import Session

from ecommerce import metrics
from ecommerce.errors import (
    AmountMismatch,
    Conflict,
    EmptyCart,
    InsufficientStock,
    OrderTooLarge,
    PaymentDeclined,
    ServiceBusy,
    ShopError,
)
from ecommerce.gateway import GatewayUnavailable
from ecommerce.limits import MAX_AMOUNT
from ecommerce.models import (
    ORDER_STATUS_PAID,
    ORDER_STATUS_PAYMENT_FAILED,
    ORDER_STATUS_PENDING,
)
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
from ecommerce.services import Shop, idempotency, orders, rules, settlement
from ecommerce.services.combining import Combiner
from ecommerce.services.results import LineView, OrderView, encode, total_of
from ecommerce.services.stock import insufficient, price_changed, shortage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PayRequest:
    user_id: str
    amount: Decimal
    key: str | None

    @property
    def fingerprint(self) -> str:
        return idempotency.fingerprint("pay", self.user_id, {"amount": format_money(self.amount)})


def pay(shop: Shop, user_id: str, amount: Decimal, idempotency_key: str | None = None) -> OrderView:
    """Pay exactly ``amount`` for the user's whole cart; returns the paid order."""
    request = PayRequest(user_id, amount, idempotency_key)
    try:
        if shop.combining is None:
            order = _pay_alone(shop, request)
        else:
            # The same key while its first request is queued or in a batch of this
            # process: 409 at once, as the advisory lock answers across processes.
            key = (user_id, idempotency_key) if idempotency_key is not None else None
            order = _combiner(shop).submit(request, key)
        if shop.gateway is not None:
            order = _charge_and_confirm(shop, order)
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


# --- With a payment provider: reserve, charge with no lock held, confirm -------------


def _charge_and_confirm(shop: Shop, order: OrderView) -> OrderView:
    """The reserved (pending) order charged at the provider, with no transaction
    open, then confirmed or released. A replayed pay asks again: the provider
    answers a repeated idempotency key with the first outcome, never a second
    charge. No answer in time: the order stays pending (202); the webhook,
    `flask reconcile-payments` or `flask release-expired` settles it."""
    assert shop.gateway is not None
    if order.replayed:
        current = orders.get_order(shop, order.order_id)
        order = replace(current, replayed=True)
    if order.status != ORDER_STATUS_PENDING:
        return _answer(order)
    try:
        outcome = shop.gateway.charge(order.order_id, order.total)
    except GatewayUnavailable as unknown:
        log.warning("order %s: %s; it stays pending", order.order_id, unknown)
        return order
    confirmed = settlement.confirm_payment(shop, order.order_id, outcome)
    return _answer(replace(confirmed, replayed=order.replayed))


def _answer(order: OrderView) -> OrderView:
    if order.status == ORDER_STATUS_PAYMENT_FAILED:
        raise PaymentDeclined(
            f"the payment for order {order.order_id} was declined; its stock went back on sale",
            details={"order_id": order.order_id},
        )
    if order.status in (ORDER_STATUS_PAID, ORDER_STATUS_PENDING):
        return order
    raise Conflict(
        f"order {order.order_id} is {order.status}: the reservation ended before the payment "
        "was confirmed (a charge that arrives late is refunded)",
        details={"order_id": order.order_id, "status": order.status},
    )


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
    try:
        return idempotency.run_once(
            shop,
            "pay",
            user_id=request.user_id,
            key=request.key,
            arguments={"amount": format_money(request.amount)},
            effect=lambda session: _pay(session, shop, request.user_id, request.amount),
            decode=OrderView.decode,
        )
    except InsufficientStock as refused:
        _mark_sold_out(shop, refused)
        raise


def _mark_sold_out(shop: Shop, refused: InsufficientStock) -> None:
    for short in refused.details["items"]:
        if Decimal(short["available"]) == 0:
            shop.sold_out.mark(short["item_id"], short["name"])


def amount_mismatch(total: Decimal, amount: Decimal) -> AmountMismatch:
    return AmountMismatch(
        f"the amount must be exactly the cart total {format_money(total)}",
        details={"expected": format_money(total), "received": format_money(amount)},
    )


def order_too_large(total: Decimal) -> OrderTooLarge:
    return OrderTooLarge(f"the order total {format_money(total)} exceeds {MAX_AMOUNT}")


def empty_cart(user_id: str) -> EmptyCart:
    return EmptyCart(f"the cart of {user_id} is empty")


def _lines_of(cart: Sequence[CartLineRow]) -> list[LineView]:
    return [LineView(line.item_id, line.name, line.quantity, line.price) for line in cart]


def _short_lines(
    cart: Sequence[CartLineRow], available: dict[int, Decimal]
) -> list[dict[str, object]]:
    return [
        shortage(line.item_id, line.name, line.quantity, available[line.item_id])
        for line in cart
        if available[line.item_id] < line.quantity
    ]


def _rule_refusal(
    cart: Sequence[CartLineRow],
    at: dt.datetime,
    held: dict[int, int],
    locked: Mapping[int, ItemRow] | None = None,
) -> ShopError | None:
    """The item's sale window, then its per-buyer limit (``held``: units of each
    item the buyer already holds in orders), judged on the locked item rows when
    there are any (an admin may have changed a rule since the cart was read)."""
    for line in cart:
        rules_of = _rules_of(line, locked)
        refusal = rules.window_refusal(line.item_id, line.name, rules_of, at)
        if refusal is not None:
            return refusal
    for line in cart:
        limit = _rules_of(line, locked).per_user_limit
        refusal = rules.limit_refusal(
            line.item_id, line.name, limit, held.get(line.item_id, 0), line.quantity
        )
        if refusal is not None:
            return refusal
    return None


def _rules_of(line: CartLineRow, locked: Mapping[int, ItemRow] | None) -> CartLineRow | ItemRow:
    """The locked row's rules when the item is locked (items marked sold out are
    not), else those read with the cart."""
    return locked.get(line.item_id, line) if locked is not None else line


def _held(session: Session, users: Iterable[str], limited: set[int]) -> dict[str, dict[int, int]]:
    """Units held in orders, per user and item, of the ``limited`` items (those
    with a per-buyer limit; no statement when there are none)."""
    if not limited:
        return {}
    held: dict[str, dict[int, int]] = {}
    for (user, item), units in OrderRepository(session).held_units(users, limited).items():
        held.setdefault(user, {})[item] = units
    return held


def _limited(cart: Iterable[CartLineRow], locked: Mapping[int, ItemRow]) -> set[int]:
    """The cart's items that have a per-buyer limit: by their locked rows' rules,
    and for items not locked (marked sold out) by the rules read with the cart."""
    return {line.item_id for line in cart if _rules_of(line, locked).per_user_limit is not None}


def _refusal(
    user_id: str,
    amount: Decimal,
    cart: Sequence[CartLineRow],
    available: dict[int, Decimal],
    locked: Mapping[int, ItemRow] | None,
    at: dt.datetime,
    held: dict[int, int],
) -> ShopError | None:
    """Why this buyer cannot pay now (None: they can), in the order a buyer is told:
    empty cart, too large, outside the sale window, over the per-buyer limit,
    wrong amount (short stock first), short stock, price changed. ``available``
    is the stock each line can take; ``locked`` the locked item rows (None before
    they are locked); ``held`` the buyer's units in orders, per item."""
    if not cart:
        return empty_cart(user_id)
    total = total_of(_lines_of(cart))
    if total > MAX_AMOUNT:
        return order_too_large(total)
    ruled = _rule_refusal(cart, at, held, locked)
    if ruled is not None:
        return ruled
    short = _short_lines(cart, available)
    if short or amount != total:
        return insufficient(short) if short else amount_mismatch(total, amount)
    if locked is not None and any(locked[line.item_id].price != line.price for line in cart):
        return price_changed()
    return None


def _pay(session: Session, shop: Shop, user_id: str, amount: Decimal) -> OrderView:
    if shop.sold_out.any():
        _refuse_if_sold_out(session, shop, user_id, amount)
    cart = CartRepository(session).lock_for_pay(user_id)
    if not cart:
        raise empty_cart(user_id)
    lines = _lines_of(cart)
    total = total_of(lines)
    if total > MAX_AMOUNT:
        raise order_too_large(total)
    # Before any item row is locked, the rules as read with the cart refuse early
    # (in the order a buyer is told); they are judged again on the locked rows.
    # Two pays of this cart queue on its rows (locked above), so the units held
    # in orders cannot change under this pay.
    held = _held(session, [user_id], _limited(cart, {})).get(user_id, {})
    ruled = _rule_refusal(cart, rules.now(), held)
    if ruled is not None:
        raise ruled
    marked = shop.sold_out.marked(session, [line.item_id for line in cart])
    if amount != total or marked:
        # The stock read with the cart (a plain read) is enough to refuse a wrong
        # amount (short stock is the more useful answer), and a sold-out mark to
        # refuse without the lock.
        available = {ln.item_id: Decimal(0) if ln.item_id in marked else ln.stock for ln in cart}
        short = _short_lines(cart, available)
        if short:
            raise insufficient(short)
        raise amount_mismatch(total, amount)
    reserve_s = _reserve_s(shop)
    order_id, created_at = OrderRepository(session).write_paid(
        user_id,
        total,
        amount,
        [NewOrderLine(line.item_id, line.quantity, line.unit_price) for line in lines],
        reserve_s,
    )

    def judge(locked: Mapping[int, ItemRow]) -> None:
        """Every rule again, on the item rows as locked: an admin who closed the
        sale, set a limit or changed a price while this pay waited is obeyed."""
        more = _limited(cart, locked) - _limited(cart, {})
        held_now = held | _held(session, [user_id], more).get(user_id, {}) if more else held
        available = {item_id: row.stock for item_id, row in locked.items()}
        refusal = _refusal(user_id, amount, cart, available, locked, rules.now(), held_now)
        if refusal is not None:
            raise refusal

    wanted = {line.item_id: line.quantity for line in cart}
    shop.stock.take(session, wanted, {line.item_id: line.price for line in cart}, judge)
    return _new_order(order_id, user_id, total, created_at, lines, reserve_s)


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
    expires_at = created_at + dt.timedelta(seconds=reserve_s)  # as the database computed it
    return OrderView(
        order_id, user_id, ORDER_STATUS_PENDING, total, created_at, lines, expires_at=expires_at
    )


# --- Combined pays --------------------------------------------------------------


def _sold_out_refusal(
    user_id: str, amount: Decimal, cart: Sequence[CartLineRow], marked: dict[int, str]
) -> ShopError | None:
    """The answer to a buyer whose cart (read without a lock) holds an item marked
    sold out: the one the locked path would give. None: no marked item in it, or
    a line with a per-buyer limit (that answer needs the locked path)."""
    if not any(line.item_id in marked for line in cart):
        return None
    if any(line.per_user_limit is not None for line in cart):
        return None
    available = {ln.item_id: Decimal(0) if ln.item_id in marked else ln.stock for ln in cart}
    return _refusal(user_id, amount, cart, available, None, rules.now(), {})


def _refuse_if_sold_out(session: Session, shop: Shop, user_id: str, amount: Decimal) -> None:
    cart = CartRepository(session).lines(user_id)
    marked = shop.sold_out.marked(session, [line.item_id for line in cart])
    refusal = _sold_out_refusal(user_id, amount, cart, marked)
    if refusal is not None:
        raise refusal


def _refuse_sold_out(
    session: Session,
    shop: Shop,
    batch: Sequence[PayRequest],
    active: Sequence[int],
    outcomes: list[OrderView | ShopError | None],
) -> None:
    """Answer, from one plain read of their carts, the buyers of ``active`` whose
    cart holds an item marked sold out."""
    seen = CartRepository(session).lines_many(batch[n].user_id for n in active)
    marked = shop.sold_out.marked(session, {ln.item_id for cart in seen.values() for ln in cart})
    if not marked:
        return
    for n in active:
        request = batch[n]
        cart = seen.get(request.user_id, [])
        outcomes[n] = _sold_out_refusal(request.user_id, request.amount, cart, marked)


def _refused_before_lock(
    request: PayRequest, cart: Sequence[CartLineRow], marked: Mapping[int, str], at: dt.datetime
) -> bool:
    """Whether the buyer will be refused whatever the item rows say once locked:
    :func:`_refusal` as if every unmarked item had stock enough (an item marked
    sold out has none), on the rules read with the cart. Such buyers draw no
    order id; should a rule change before the lock let one win, its id is drawn
    then."""
    enough = {ln.item_id: Decimal(0 if ln.item_id in marked else ln.quantity) for ln in cart}
    return _refusal(request.user_id, request.amount, cart, enough, None, at, {}) is not None


@dataclass
class _BatchResult:
    outcomes: list[OrderView | ShopError]
    sold_out: dict[int, str]  # items this batch left at 0 stock: {id: name}


def _run_batch(shop: Shop, batch: Sequence[PayRequest]) -> list[OrderView | BaseException]:
    metrics.observe_batch(len(batch))
    result = shop.transaction(lambda session: _pay_batch(session, shop, batch), "pay_batch")
    # Marked only once the batch has committed.
    for item_id, name in result.sold_out.items():
        shop.sold_out.mark(item_id, name)
    return list(result.outcomes)


def _pay_batch(session: Session, shop: Shop, batch: Sequence[PayRequest]) -> _BatchResult:
    # 1. Idempotency-Keys (never twice in one batch: the combiner lets one
    # request per key be in flight).
    outcomes = idempotency.claim_many(session, batch, OrderView.decode)

    # 2. Carts, every user at once. After a sold-out mark, buyers whose cart holds
    # a marked item are refused from a plain read first: they take no lock, and a
    # batch of only them assigns no transaction id, so its COMMIT flushes nothing.
    active = [n for n in range(len(batch)) if outcomes[n] is None]
    if shop.sold_out.any() and active:
        _refuse_sold_out(session, shop, batch, active, outcomes)
        active = [n for n in active if outcomes[n] is None]
    carts = (
        CartRepository(session).lock_for_pay_many(batch[n].user_id for n in active)
        if active
        else {}
    )

    # 3. Order ids for the buyers who might win, drawn before any item row is
    # locked; a buyer refused whatever the item rows say draws none.
    wanted = {line.item_id for n in active for line in carts.get(batch[n].user_id, [])}
    marked = shop.sold_out.marked(session, wanted)
    order_rows = OrderRepository(session)
    candidates = sum(
        1
        for n in active
        if not _refused_before_lock(batch[n], carts.get(batch[n].user_id, []), marked, rules.now())
    )
    drawn, created_at = order_rows.next_ids(candidates) if candidates else ([], None)

    # 4. Lock the items (ascending id); sold-out marked ones are not touched.
    to_lock = wanted - marked.keys()
    locked = {row.id: row for row in ItemRepository(session).lock(to_lock)} if to_lock else {}
    available = {item_id: row.stock for item_id, row in locked.items()}
    available |= dict.fromkeys(marked, Decimal(0))
    # Per-buyer limits: the cart rows are locked, so held units cannot change.
    at = rules.now()
    held = _held(
        session,
        (batch[n].user_id for n in active),
        _limited((line for n in active for line in carts.get(batch[n].user_id, [])), locked),
    )

    # 5. Allocate in arrival order; each buyer all or nothing.
    paid_users: set[str] = set()
    winners: list[tuple[int, list[CartLineRow]]] = []
    taken: dict[int, int] = {}
    for n in active:
        request = batch[n]
        cart = [] if request.user_id in paid_users else carts.get(request.user_id, [])
        refusal = _refusal(
            request.user_id,
            request.amount,
            cart,
            available,
            locked,
            at,
            held.get(request.user_id, {}),
        )
        if refusal is not None:
            outcomes[n] = refusal
            continue
        for line in cart:
            available[line.item_id] -= line.quantity
            taken[line.item_id] = taken.get(line.item_id, 0) + line.quantity
        paid_users.add(request.user_id)
        winners.append((n, cart))
    if len(winners) > len(drawn):
        # A rule changed between the carts' read and the item lock (an admin
        # opened a window or raised a limit): the few missing ids, drawn now.
        more, created_at = order_rows.next_ids(len(winners) - len(drawn))
        drawn += more

    reserve_s = _reserve_s(shop)
    new_orders: list[NewOrder] = []
    new_keys: list[NewKeyRecord] = []
    for (n, cart), order_id in zip(winners, drawn, strict=False):
        request = batch[n]
        lines = _lines_of(cart)
        assert created_at is not None
        order = _new_order(order_id, request.user_id, total_of(lines), created_at, lines, reserve_s)
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
        outcomes[n] = order

    # 6. One statement writes it all (COMMIT follows in shop.transaction).
    if new_orders:
        order_rows.write_paid_many(new_orders, new_keys, shop.idempotency_ttl_s, taken, reserve_s)

    sold_out = {i: row.name for i, row in locked.items() if available[i] == 0}
    assert all(o is not None for o in outcomes)
    return _BatchResult(outcomes, sold_out)  # type: ignore[arg-type]
