"""The checkout's rules: why a buyer may not pay, and who of a batch gets what.

Pure functions over plain values. A buyer is their cart as read under its lock
(each line with its item's name, price and rules as read with the cart), the
amount they offer and the units they already hold in orders. The item rows, once
locked, may say otherwise (an admin closed a sale, set a limit or changed a
price while the buyer waited): every rule is judged on them when they are given.

:func:`refusal` is the order a buyer is told why not, and :func:`allocate` runs
it for every buyer of a batch in arrival order, each all or nothing, each
against the stock the buyers before them left: so each buyer's answer is the
one they would get alone at their place in the queue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from ecommerce.domain import rules
from ecommerce.errors import (
    AmountMismatch,
    Conflict,
    EmptyCart,
    InsufficientStock,
    OrderTooLarge,
    ShopError,
)
from ecommerce.limits import MAX_AMOUNT
from ecommerce.money import format_money


class ItemRules(Protocol):
    """An item's price and sale rules (a locked item row, or a cart line)."""

    @property
    def price(self) -> Decimal: ...
    @property
    def per_user_limit(self) -> int | None: ...
    @property
    def sale_starts_at(self) -> dt.datetime | None: ...
    @property
    def sale_ends_at(self) -> dt.datetime | None: ...


class CartLine(ItemRules, Protocol):
    """A cart line with its item's name, price, stock and rules as read with the cart."""

    @property
    def item_id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def stock(self) -> Decimal: ...


@dataclass(frozen=True)
class Buyer:
    user_id: str
    amount: Decimal
    cart: Sequence[CartLine]
    held: Mapping[int, int] = field(default_factory=dict)  # units in orders, by item


# --- The answers ---------------------------------------------------------------


def shortage(item_id: int, name: str, requested: int, available: Decimal) -> dict[str, object]:
    """How one short line is described to the buyer (the details of insufficient_stock)."""
    return {
        "item_id": item_id,
        "name": name,
        "requested": requested,
        "available": format_money(available),
    }


def insufficient(short: list[dict[str, object]]) -> InsufficientStock:
    names = ", ".join(str(s["name"]) for s in short)
    return InsufficientStock(f"not enough stock for: {names}", details={"items": short})


def price_changed() -> Conflict:
    return Conflict("a price changed while paying; review the cart and pay again")


def amount_mismatch(total: Decimal, amount: Decimal) -> AmountMismatch:
    return AmountMismatch(
        f"the amount must be exactly the cart total {format_money(total)}",
        details={"expected": format_money(total), "received": format_money(amount)},
    )


def order_too_large(total: Decimal) -> OrderTooLarge:
    return OrderTooLarge(f"the order total {format_money(total)} exceeds {MAX_AMOUNT}")


def empty_cart(user_id: str) -> EmptyCart:
    return EmptyCart(f"the cart of {user_id} is empty")


# --- One buyer -----------------------------------------------------------------


def total(lines: Iterable[tuple[Decimal, int]]) -> Decimal:
    """What ``lines`` cost, each given as (unit price, quantity): a cart at the
    prices read with it, an order's lines at the prices it was made with."""
    return sum((price * quantity for price, quantity in lines), Decimal("0"))


def cart_total(cart: Sequence[CartLine]) -> Decimal:
    """The cart's total at the prices read with it."""
    return total((line.price, line.quantity) for line in cart)


def rules_of(line: CartLine, locked: Mapping[int, ItemRules] | None) -> ItemRules:
    """The locked row's rules when the item is locked (items marked sold out are
    not), else those read with the cart."""
    return locked.get(line.item_id, line) if locked is not None else line


def limited(cart: Sequence[CartLine], locked: Mapping[int, ItemRules] | None) -> set[int]:
    """The cart's items that have a per-buyer limit (whose held units count)."""
    return {line.item_id for line in cart if rules_of(line, locked).per_user_limit is not None}


def refusal(
    buyer: Buyer,
    available: Mapping[int, Decimal],
    locked: Mapping[int, ItemRules] | None,
    at: dt.datetime,
) -> ShopError | None:
    """Why this buyer cannot pay now (None: they can), in the order a buyer is told:
    empty cart, too large, outside the sale window, over the per-buyer limit,
    wrong amount (short stock first), short stock, price changed. ``available``
    is the stock each line can take; ``locked`` the locked item rows (None before
    they are locked)."""
    cart = buyer.cart
    if not cart:
        return empty_cart(buyer.user_id)
    due = cart_total(cart)
    if due > MAX_AMOUNT:
        return order_too_large(due)
    for line in cart:
        refused = rules.window_refusal(line.item_id, line.name, rules_of(line, locked), at)
        if refused is not None:
            return refused
    for line in cart:
        limit = rules_of(line, locked).per_user_limit
        held = buyer.held.get(line.item_id, 0)
        refused = rules.limit_refusal(line.item_id, line.name, limit, held, line.quantity)
        if refused is not None:
            return refused
    short = [
        shortage(line.item_id, line.name, line.quantity, available[line.item_id])
        for line in cart
        if available[line.item_id] < line.quantity
    ]
    if short:
        return insufficient(short)
    if buyer.amount != due:
        return amount_mismatch(due, buyer.amount)
    if locked is not None and any(locked[line.item_id].price != line.price for line in cart):
        return price_changed()
    return None


def stock_as_read(cart: Sequence[CartLine], marked: Mapping[int, str]) -> dict[int, Decimal]:
    """The stock each line can take as read with the cart (an item marked sold
    out has none)."""
    return {ln.item_id: Decimal(0) if ln.item_id in marked else ln.stock for ln in cart}


def hopeless(buyer: Buyer) -> bool:
    """Whether the buyer is refused whatever the item rows say and whenever they
    are read: a cart total too large, or an amount that is not the cart's total
    (a price changed under the lock only refuses more). Such a buyer is answered
    from the cart's read, with no item lock. Not for a line with a per-buyer
    limit: that answer needs the units held."""
    cart = buyer.cart
    if not cart or any(line.per_user_limit is not None for line in cart):
        return False
    due = cart_total(cart)
    return due > MAX_AMOUNT or buyer.amount != due


def sold_out_refusal(buyer: Buyer, marked: Mapping[int, str], at: dt.datetime) -> ShopError | None:
    """The answer, before any lock, to a buyer whose cart holds an item marked
    sold out: the one the locked path would give. None: no marked item in the
    cart, or a line with a per-buyer limit (that answer needs the held units)."""
    cart = buyer.cart
    if not any(line.item_id in marked for line in cart):
        return None
    if any(line.per_user_limit is not None for line in cart):
        return None
    return refusal(buyer, stock_as_read(cart, marked), None, at)


def refused_even_with_stock(buyer: Buyer, marked: Mapping[int, str], at: dt.datetime) -> bool:
    """Whether the buyer would be refused even if every item not marked sold
    out had stock enough (a marked one has none): :func:`refusal` on the rules
    read with the cart, no units held. A pay draws order ids only for the
    buyers this does not refuse (the locked rows may refuse more)."""
    cart = buyer.cart
    enough = {ln.item_id: Decimal(0 if ln.item_id in marked else ln.quantity) for ln in cart}
    return refusal(Buyer(buyer.user_id, buyer.amount, cart), enough, None, at) is not None


# --- A batch of buyers ---------------------------------------------------------


@dataclass
class Allocation:
    refusals: list[ShopError | None]  # per buyer, in order; None: the buyer pays
    taken: dict[int, int]  # units taken, by item
    left: dict[int, Decimal]  # the stock left, by item

    @property
    def winners(self) -> list[int]:
        return [n for n, refused in enumerate(self.refusals) if refused is None]


def allocate(
    buyers: Sequence[Buyer],
    available: Mapping[int, Decimal],
    locked: Mapping[int, ItemRules],
    at: dt.datetime,
) -> Allocation:
    """Judge ``buyers`` in arrival order against the stock ``available`` (the
    locked rows' stock; items marked sold out at 0): each either takes every
    line of their cart or nothing. A user who already paid in this batch finds
    their cart empty, as a second pay of a cart does alone."""
    left = dict(available)
    taken: dict[int, int] = {}
    refusals: list[ShopError | None] = []
    paid: set[str] = set()
    for buyer in buyers:
        if buyer.user_id in paid:
            buyer = Buyer(buyer.user_id, buyer.amount, [], buyer.held)
        refused = refusal(buyer, left, locked, at)
        refusals.append(refused)
        if refused is not None:
            continue
        for line in buyer.cart:
            left[line.item_id] -= line.quantity
            taken[line.item_id] = taken.get(line.item_id, 0) + line.quantity
        paid.add(buyer.user_id)
    return Allocation(refusals, taken, left)
