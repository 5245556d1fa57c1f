"""Cart use cases: add, remove, view (also the read-only checkout quote).

With cart combining on (CART_COMBINING, the default), adds and cart reads that
arrive while others are being served are answered together, as pays are
(ecommerce/services/combining.py): one transaction for the batch, one
statement for all its adds (or all its reads). Each buyer still gets exactly
the answer they would get alone, in the order the requests arrived; a batch
that fails unexpectedly is re-run request by request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from ecommerce import metrics
from ecommerce.errors import NotFound, ShopError
from ecommerce.repositories import (
    AddedLine,
    CartLineRow,
    CartRepository,
    IdempotencyRepository,
    NewKeyRecord,
    OrderRepository,
)
from ecommerce.services import Shop, idempotency, rules
from ecommerce.services.combining import Combiner
from ecommerce.services.results import CartView, LineView, encode
from ecommerce.services.stock import insufficient, shortage


def _cart_view(user_id: str, rows: Sequence[CartLineRow], at: dt.datetime) -> CartView:
    return CartView(
        user_id=user_id,
        lines=[LineView(r.item_id, r.name, r.quantity, r.price) for r in rows],
        available={r.item_id: r.stock for r in rows},
        off_sale=frozenset(r.item_id for r in rows if not rules.on_sale(r, at)),
    )


def _read_cart(session: Session, user_id: str) -> CartView:
    return _cart_view(user_id, CartRepository(session).lines(user_id), rules.now())


def _read_carts(session: Session, user_ids: Sequence[str]) -> list[CartView]:
    """Each user's cart, all from one plain read (a user may appear twice)."""
    metrics.observe_cart_batch("read", len(user_ids))
    carts = CartRepository(session).lines_many(user_ids)
    at = rules.now()
    return [_cart_view(user_id, carts.get(user_id, []), at) for user_id in user_ids]


def view_cart(shop: Shop, user_id: str) -> CartView:
    """The user's cart with each line's current stock (GET /cart/<user>, the
    checkout quote). A plain read: nothing is locked. Combined, the batch reads
    after every one of its requests arrived, so a buyer sees what they added."""
    if shop.cart_combining is None:
        return _view_alone(shop, user_id)
    return _cart_reader(shop).submit(user_id)


def _view_alone(shop: Shop, user_id: str) -> CartView:
    return shop.transaction(lambda session: _read_cart(session, user_id), "view_cart")


def _cart_reader(shop: Shop) -> Combiner[str, CartView]:
    assert shop.cart_combining is not None
    return shop.combiner(
        "cart-reader",
        shop.cart_combining,
        run_batch=lambda users: shop.transaction(
            lambda session: _read_carts(session, users), "view_carts"
        ),
        run_alone=lambda user_id: _view_alone(shop, user_id),
    )


# --- Adding to a cart ----------------------------------------------------------


@dataclass(frozen=True)
class AddRequest:
    user_id: str
    item_id: int
    quantity: int
    key: str | None

    @property
    def arguments(self) -> dict[str, int]:
        return {"item_id": self.item_id, "quantity": self.quantity}

    @property
    def fingerprint(self) -> str:
        return idempotency.fingerprint("add_to_cart", self.user_id, self.arguments)


def add_to_cart(
    shop: Shop, user_id: str, item_id: int, quantity: int, idempotency_key: str | None = None
) -> CartView:
    """Add ``quantity`` of an item to the user's cart line; returns the cart.

    Refuses when the line would take the buyer past the item's per-buyer limit
    (counting their orders) or exceed its current stock. Both are plain reads,
    early feedback; the authoritative checks are at pay. Adding before the
    sale opens is allowed.
    """
    request = AddRequest(user_id, item_id, quantity, idempotency_key)
    if shop.cart_combining is None:
        return _add_alone(shop, request)
    key = (user_id, idempotency_key) if idempotency_key is not None else None
    return _cart_adder(shop).submit(request, key)


def _add_refusal(request: AddRequest, line: AddedLine, held: int) -> ShopError | None:
    """Why the line, at ``line.quantity`` with this add, may not stay in the cart
    (``held``: the buyer's units of the item in orders)."""
    if line.per_user_limit is not None:
        refusal = rules.limit_refusal(
            request.item_id, line.name, line.per_user_limit, held, line.quantity
        )
        if refusal is not None:
            return refusal
    if line.quantity > line.stock:
        return insufficient([shortage(request.item_id, line.name, line.quantity, line.stock)])
    return None


def _not_found(item_id: int) -> NotFound:
    return NotFound(f"item {item_id} does not exist")


def _held(session: Session, pairs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Units held in orders for these (user, item) pairs (one statement)."""
    if not pairs:
        return {}
    users = {user for user, _ in pairs}
    items = {item for _, item in pairs}
    return OrderRepository(session).held_units(users, items)


def _add_alone(shop: Shop, request: AddRequest) -> CartView:
    def add(session: Session) -> CartView:
        line = CartRepository(session).add(request.user_id, request.item_id, request.quantity)
        if line is None:
            raise _not_found(request.item_id)
        limited = [(request.user_id, request.item_id)] if line.per_user_limit is not None else []
        held = _held(session, limited).get((request.user_id, request.item_id), 0)
        refusal = _add_refusal(request, line, held)
        if refusal is not None:
            raise refusal
        return _read_cart(session, request.user_id)

    return idempotency.run_once(
        shop,
        "add_to_cart",
        user_id=request.user_id,
        key=request.key,
        arguments=request.arguments,
        effect=add,
        decode=CartView.decode,
    )


def _cart_adder(shop: Shop) -> Combiner[AddRequest, CartView]:
    assert shop.cart_combining is not None
    return shop.combiner(
        "cart-adder",
        shop.cart_combining,
        run_batch=lambda batch: shop.transaction(
            lambda session: _add_batch(session, shop, batch), "add_to_carts"
        ),
        run_alone=lambda request: _add_alone(shop, request),
        key_in_use=idempotency.in_use,
    )


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
       left it (limit, then stock, as alone); a refused add is taken back out
       with one more statement, so it changes nothing;
    4. one read of the batch's carts answers everyone (a buyer who added twice
       sees, in each answer, only the adds up to that one); keyed results are
       stored in one statement.
    """
    metrics.observe_cart_batch("add", len(batch))
    outcomes = idempotency.claim_many(session, batch, CartView.decode)
    active = [n for n, outcome in enumerate(outcomes) if outcome is None]
    if not active:
        return [o for o in outcomes if o is not None]

    carts = CartRepository(session)
    units: dict[tuple[str, int], int] = {}
    for n in active:
        pair = (batch[n].user_id, batch[n].item_id)
        units[pair] = units.get(pair, 0) + batch[n].quantity
    added = carts.add_many(units)
    # What each line held before this batch (its row is locked now).
    quantity = {pair: line.quantity - units[pair] for pair, line in added.items()}
    held = _held(session, [pair for pair, line in added.items() if line.per_user_limit is not None])

    lines_of_user: dict[str, list[tuple[str, int]]] = {}
    for pair in quantity:
        lines_of_user.setdefault(pair[0], []).append(pair)
    # Per accepted add: the user's lines touched by the batch, as it left them.
    seen: dict[int, dict[int, int]] = {}
    for n in active:
        request = batch[n]
        pair = (request.user_id, request.item_id)
        if pair not in added:
            outcomes[n] = _not_found(request.item_id)
            continue
        line = replace(added[pair], quantity=quantity[pair] + request.quantity)
        refusal = _add_refusal(request, line, held.get(pair, 0))
        if refusal is not None:
            outcomes[n] = refusal
            continue
        quantity[pair] = line.quantity
        seen[n] = {item: quantity[(user, item)] for user, item in lines_of_user[request.user_id]}

    # Refused units out again: every line back to what its accepted adds make.
    corrections = {pair: q for pair, q in quantity.items() if q != added[pair].quantity}
    if corrections:
        carts.set_quantities(corrections)

    if seen:
        lines = carts.lines_many(batch[n].user_id for n in seen)
        at = rules.now()
        new_keys: list[NewKeyRecord] = []
        for n, touched in seen.items():
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
            IdempotencyRepository(session).save_many(new_keys, shop.idempotency_ttl_s)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def remove_from_cart(shop: Shop, user_id: str, item_id: int) -> CartView:
    def work(session: Session) -> CartView:
        if not CartRepository(session).remove(user_id, item_id):
            raise NotFound(f"item {item_id} is not in the cart of {user_id}")
        return _read_cart(session, user_id)

    return shop.transaction(work, "remove_from_cart")
