"""Whether an add may stay in the cart: a batch of adds judged in arrival order.

An add is early feedback, not a sale (the pay judges again under its locks): a
line may not take the buyer past the item's per-buyer limit (counting the units
they hold in orders) nor exceed the item's current stock. Adding before the sale
opens is allowed. Each add of a batch is judged on the line as the adds before
it left it, so each answer is the one that add would get alone in its place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from ecommerce.domain import rules
from ecommerce.domain.checkout import insufficient, shortage
from ecommerce.errors import NotFound, ShopError

Line = tuple[str, int]  # (user, item): one cart line


class ItemOfLine(Protocol):
    """What an add is judged on: the item's name, stock and per-buyer limit."""

    @property
    def name(self) -> str: ...
    @property
    def stock(self) -> Decimal: ...
    @property
    def per_user_limit(self) -> int | None: ...


@dataclass(frozen=True)
class Add:
    user_id: str
    item_id: int
    quantity: int


@dataclass
class Judged:
    refusals: list[ShopError | None]  # per add, in order; None: it stays
    quantities: dict[Line, int]  # each line as the accepted adds leave it
    # Per accepted add: the quantities of its user's lines touched by the batch,
    # as the adds up to it left them (that add's answer shows those).
    seen: dict[int, dict[int, int]]


def not_found(item_id: int) -> NotFound:
    return NotFound(f"item {item_id} does not exist")


def refusal(item_id: int, item: ItemOfLine, held: int, quantity: int) -> ShopError | None:
    """Why the line may not stay at ``quantity`` (``held``: the buyer's units of
    the item in orders): over the per-buyer limit first, then over the stock."""
    refused = rules.limit_refusal(item_id, item.name, item.per_user_limit, held, quantity)
    if refused is not None:
        return refused
    if quantity > item.stock:
        return insufficient([shortage(item_id, item.name, quantity, item.stock)])
    return None


def judge(
    adds: Sequence[Add],
    items: Mapping[Line, ItemOfLine],
    before: Mapping[Line, int],
    held: Mapping[Line, int],
) -> Judged:
    """Judge ``adds`` in arrival order. ``items``: the item of each line the
    batch touches (a line missing here is an item that does not exist);
    ``before``: each line's quantity before the batch; ``held``: units in
    orders, for the lines whose item has a per-buyer limit."""
    quantities = dict(before)
    lines_of_user: dict[str, list[Line]] = {}
    for line in quantities:
        lines_of_user.setdefault(line[0], []).append(line)
    refusals: list[ShopError | None] = []
    seen: dict[int, dict[int, int]] = {}
    for n, add in enumerate(adds):
        line = (add.user_id, add.item_id)
        if line not in items:
            refusals.append(not_found(add.item_id))
            continue
        quantity = quantities[line] + add.quantity
        refused = refusal(add.item_id, items[line], held.get(line, 0), quantity)
        refusals.append(refused)
        if refused is not None:
            continue
        quantities[line] = quantity
        seen[n] = {item: quantities[(user, item)] for user, item in lines_of_user[add.user_id]}
    return Judged(refusals, quantities, seen)
