"""Cart use cases: add, remove, view (also the read-only checkout quote).

With cart combining on (CART_COMBINING, the default), adds and cart reads that
arrive while others are being served are answered together, as pays are
(ecommerce/services/combining.py): one transaction for the batch, one
statement for all its adds (or all its reads). Each buyer still gets exactly
the answer they would get alone, in the order the requests arrived; a batch
that fails unexpectedly is re-run request by request. Off, each add and each
read is a batch of one in its request's thread: one engine either way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from ecommerce.domain import adds, rules
from ecommerce.errors import NotFound, ShopError
from ecommerce.limits import MAX_QUANTITY
from ecommerce.repositories import (
    CartLineRow,
    CartRepository,
    IdempotencyRepository,
    NewKeyRecord,
    OrderRepository,
)
from ecommerce.services import Shop, idempotency, rooms
from ecommerce.services.combining import Combiner, value_of
from ecommerce.services.results import CartView, LineView, encode
from ecommerce.services.transactions import Unchanged


def _cart_view(user_id: str, rows: Sequence[CartLineRow], at: dt.datetime) -> CartView:
    return CartView(
        user_id=user_id,
        lines=[LineView(r.item_id, r.name, r.quantity, r.price) for r in rows],
        available={r.item_id: r.stock for r in rows},
        off_sale=frozenset(r.item_id for r in rows if not rules.on_sale(r, at)),
    )


# --- Reading carts ---------------------------------------------------------------


def view_cart(shop: Shop, user_id: str) -> CartView:
    """The user's cart with each line's current stock (GET /cart/<user>, the
    checkout quote). A plain read: nothing is locked. Combined, the batch reads
    after every one of its requests arrived, so a buyer sees what they added."""
    if shop.cart_combining is None:
        return _view_alone(shop, user_id)
    return _cart_reader(shop).submit(user_id)


def _cart_reader(shop: Shop) -> Combiner[str, CartView]:
    assert shop.cart_combining is not None
    return shop.combiner(
        "cart-reader",
        shop.cart_combining,
        run_batch=lambda users: _run_reads(shop, users),
        run_alone=lambda user_id: _view_alone(shop, user_id),
    )


def _view_alone(shop: Shop, user_id: str) -> CartView:
    (view,) = _run_reads(shop, [user_id])
    return view


def _run_reads(shop: Shop, user_ids: Sequence[str]) -> list[CartView]:
    """Each user's cart, all from one plain read (a user may appear twice)."""
    shop.observe_batch("read", len(user_ids))

    def read(session: Session) -> list[CartView]:
        carts = CartRepository(session).lines_many(user_ids)
        at = shop.clock()
        return [_cart_view(user_id, carts.get(user_id, []), at) for user_id in user_ids]

    return shop.transaction(read, "view_cart")


# --- Adding to a cart ----------------------------------------------------------


@dataclass(frozen=True)
class AddRequest:
    user_id: str
    item_id: int
    quantity: int
    key: str | None
    admission_tokens: tuple[str, ...] = ()

    @property
    def arguments(self) -> dict[str, int]:
        return {"item_id": self.item_id, "quantity": self.quantity}

    @property
    def fingerprint(self) -> str:
        return idempotency.fingerprint("add_to_cart", self.user_id, self.arguments)


def add_to_cart(
    shop: Shop,
    user_id: str,
    item_id: int,
    quantity: int,
    idempotency_key: str | None = None,
    admission_tokens: Sequence[str] = (),
) -> CartView:
    """Add ``quantity`` of an item to the user's cart line; returns the cart.

    Refuses when the line would take the buyer past the item's per-buyer limit
    (counting their orders) or exceed its current stock (ecommerce/domain/adds.py).
    Both are plain reads, early feedback; the authoritative checks are at pay.
    Adding before the sale opens is allowed. While the item's waiting room is
    open, one of ``admission_tokens`` must admit the buyer to it (judged in the
    batch, ecommerce/services/rooms/); an item without a room costs no statement.
    """
    request = AddRequest(user_id, item_id, quantity, idempotency_key, tuple(admission_tokens))
    if shop.cart_combining is None:
        return _add_alone(shop, request)
    key = (user_id, idempotency_key) if idempotency_key is not None else None
    return _cart_adder(shop).submit(request, key)


def _cart_adder(shop: Shop) -> Combiner[AddRequest, CartView]:
    assert shop.cart_combining is not None
    return shop.combiner(
        "cart-adder",
        shop.cart_combining,
        run_batch=lambda batch: _run_adds(shop, batch),
        run_alone=lambda request: _add_alone(shop, request),
        key_in_use=idempotency.in_use,
    )


def _add_alone(shop: Shop, request: AddRequest) -> CartView:
    """An add as a batch of one, in the request's own thread."""
    return value_of(_run_adds(shop, [request])[0])


def _run_adds(shop: Shop, batch: Sequence[AddRequest]) -> list[CartView | ShopError]:
    shop.observe_batch("add", len(batch))
    return shop.transaction(lambda session: _add_batch(session, shop, batch), "add_to_cart")


def _add_batch(
    session: Session, shop: Shop, batch: Sequence[AddRequest]
) -> list[CartView | ShopError]:
    """A batch of adds as one transaction, each buyer's answer as if alone, in
    arrival order:

    1. Idempotency-Keys: replays and refusals decided first;
    2. one upsert adds every remaining add to its line (summed per line) and
       locks the lines; what each line held before the batch is its new
       quantity less the batch's units;
    3. in arrival order, each add is judged on the line as the adds before it
       left it (ecommerce/domain/adds.py); refused units are taken back out
       with one more statement, so a refused add changes nothing (a batch of
       only refused adds rolls back instead);
    4. one read of the batch's carts answers everyone (a buyer who added twice
       sees, in each answer, only the adds up to that one); keyed results are
       stored in one statement.
    """
    at = shop.clock()  # the batch's one instant: keys, sale windows, stamps
    outcomes = idempotency.claim(session, batch, CartView.decode, at)
    replayed = any(isinstance(outcome, CartView) for outcome in outcomes)
    # An item whose waiting room is open: only with the buyer's admission (this
    # worker's view of the rooms: at most one plain read per QUEUE_REFRESH_MS).
    roomed = rooms.roomed_items(session, shop)
    if roomed:
        waiting = [n for n, outcome in enumerate(outcomes) if outcome is None]
        places = rooms.admitted_places(
            session,
            shop,
            [(batch[n].user_id, batch[n].item_id) for n in waiting if batch[n].item_id in roomed],
        )
        for n in waiting:
            request = batch[n]
            outcomes[n] = rooms.admission_refusal(
                shop, request.user_id, {request.item_id}, request.admission_tokens, roomed, places
            )
    active = [n for n, outcome in enumerate(outcomes) if outcome is None]
    if not active:
        return [o for o in outcomes if o is not None]

    carts = CartRepository(session)
    units: dict[tuple[str, int], int] = {}
    for n in active:
        line = (batch[n].user_id, batch[n].item_id)
        units[line] = units.get(line, 0) + batch[n].quantity
    # No line can hold more than MAX_QUANTITY (no stock is larger), so a line's
    # batch units past it are all refused: the upsert adds at most one unit
    # more, and the refused units come out again below. Many huge adds to one
    # line can then never overflow the statement's integers and fail the batch.
    units = {line: min(count, MAX_QUANTITY + 1) for line, count in units.items()}
    added = carts.add(units)
    # What each line held before this batch (its row is locked now).
    before = {line: row.quantity - units[line] for line, row in added.items()}
    held = _held(session, [line for line, row in added.items() if row.per_user_limit is not None])

    judged = adds.judge(
        [adds.Add(batch[n].user_id, batch[n].item_id, batch[n].quantity) for n in active],
        added,
        before,
        held,
    )
    for position, refused in enumerate(judged.refusals):
        if refused is not None:
            outcomes[active[position]] = refused

    # Refused units out again: every line back to what its accepted adds make.
    corrections = {ln: q for ln, q in judged.quantities.items() if q != added[ln].quantity}
    if corrections:
        carts.set_quantities(corrections)

    if judged.seen:
        accepted = {active[position]: touched for position, touched in judged.seen.items()}
        lines = carts.lines_many(batch[n].user_id for n in accepted)
        new_keys: list[NewKeyRecord] = []
        for n, touched in accepted.items():
            request = batch[n]
            rows = [
                replace(row, quantity=touched.get(row.item_id, row.quantity))
                for row in lines.get(request.user_id, [])
                if touched.get(row.item_id, row.quantity) > 0
            ]
            view = _cart_view(request.user_id, rows, at)
            outcomes[n] = view
            if request.key is not None:
                new_keys.append(
                    NewKeyRecord(request.user_id, request.key, request.fingerprint, encode(view))
                )
        if new_keys:
            IdempotencyRepository(session).save(new_keys, shop.idempotency_ttl_s, at)
    assert all(o is not None for o in outcomes)
    answers = [o for o in outcomes if o is not None]
    if not judged.seen and not replayed:
        raise Unchanged(answers)  # every add refused: rolled back, nothing to flush
    return answers


def _held(session: Session, lines: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Units held in orders for these (user, item) lines (one statement)."""
    if not lines:
        return {}
    users = {user for user, _ in lines}
    items = {item for _, item in lines}
    return OrderRepository(session).held_units(users, items)


# --- Removing from a cart --------------------------------------------------------


def remove_from_cart(shop: Shop, user_id: str, item_id: int) -> CartView:
    def work(session: Session) -> CartView:
        carts = CartRepository(session)
        if not carts.remove(user_id, item_id):
            raise NotFound(f"item {item_id} is not in the cart of {user_id}")
        return _cart_view(user_id, carts.lines(user_id), shop.clock())

    return shop.transaction(work, "remove_from_cart")
