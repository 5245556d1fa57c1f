"""How a pay takes units out of stock, behind one interface (STOCK_STRATEGY).

* ``for_update`` (default): the design note's fix. Lock the item rows
  (FOR NO KEY UPDATE, ascending id), check every line, then decrement.
* ``atomic``: no separate locking read. Each line is one conditional
  ``UPDATE ... WHERE stock >= :q RETURNING``, in ascending id order; if any line
  matched nothing the pay fails and its transaction rolls back. Same guarantees,
  one statement fewer while the hot row is held.
* ``naive``: the unlocked read-then-write that oversold on 12.12. It exists only
  so the flash-sale simulator can show the failure; the app refuses to start
  with it unless ALLOW_UNSAFE_STRATEGY is set.

The pay takes stock last, right before COMMIT, so a hot item's row is held for
as few round trips as possible (see ecommerce/services/payment.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import ClassVar, Protocol

from sqlalchemy.orm import Session

from ecommerce.errors import Conflict, InsufficientStock
from ecommerce.money import format_money
from ecommerce.repositories import ItemRepository, ItemRow

#: Judges the pay on the item rows as they were locked ({item_id: row}, stock
#: before this pay): raises the buyer's refusal, if any (a sale window closed or
#: a limit set while the pay waited for the rows counts).
Judge = Callable[[Mapping[int, ItemRow]], None]


class StockStrategy(Protocol):
    name: ClassVar[str]
    safe: ClassVar[bool]

    def take(
        self,
        session: Session,
        wanted: Mapping[int, int],
        prices: Mapping[int, Decimal],
        judge: Judge | None = None,
    ) -> None:
        """Remove ``wanted`` ({item_id: quantity}) from stock, all or nothing.

        ``prices`` are the unit prices the order was written at; a row whose
        price changed meanwhile is a Conflict. Raises InsufficientStock naming
        every short item; the caller's transaction then rolls back. ``judge``
        sees the rows once they are locked and may refuse the pay.
        """
        ...


def shortage(item_id: int, name: str, requested: int, available: Decimal) -> dict[str, object]:
    """How one short line is described to the buyer (the details of insufficient_stock)."""
    return {
        "item_id": item_id,
        "name": name,
        "requested": requested,
        "available": format_money(available),
    }


def shortages(items: Iterable[ItemRow], wanted: Mapping[int, int]) -> list[dict[str, object]]:
    return [
        shortage(item.id, item.name, wanted[item.id], item.stock)
        for item in items
        if item.stock < wanted[item.id]
    ]


def insufficient(short: list[dict[str, object]]) -> InsufficientStock:
    names = ", ".join(str(s["name"]) for s in short)
    return InsufficientStock(f"not enough stock for: {names}", details={"items": short})


def price_changed() -> Conflict:
    return Conflict("a price changed while paying; review the cart and pay again")


class ForUpdateStrategy:
    name: ClassVar[str] = "for_update"
    safe: ClassVar[bool] = True

    def take(
        self,
        session: Session,
        wanted: Mapping[int, int],
        prices: Mapping[int, Decimal],
        judge: Judge | None = None,
    ) -> None:
        items = ItemRepository(session)
        locked = items.lock(wanted)
        if judge is not None:
            judge({item.id: item for item in locked})
        short = shortages(locked, wanted)
        if short:
            raise insufficient(short)
        if any(item.price != prices[item.id] for item in locked):
            raise price_changed()
        items.decrement(wanted)


class AtomicStrategy:
    name: ClassVar[str] = "atomic"
    safe: ClassVar[bool] = True

    def take(
        self,
        session: Session,
        wanted: Mapping[int, int],
        prices: Mapping[int, Decimal],
        judge: Judge | None = None,
    ) -> None:
        items = ItemRepository(session)
        taken = {
            item_id: items.take_if_available(item_id, wanted[item_id], prices[item_id])
            for item_id in sorted(wanted)
        }
        missed = [item_id for item_id, row in taken.items() if row is None]
        if missed:
            # Stock as other transactions see it now; ours is rolled back anyway.
            seen = items.read(missed)
            short = shortages(seen, wanted)
            raise insufficient(short) if short else price_changed()
        if judge is not None:
            judge({item_id: row for item_id, row in taken.items() if row is not None})


class NaiveStrategy:
    """UNSAFE: reads stock without a lock and writes back an absolute value.

    Two buyers reading the same stock both pass the check and both write
    ``stock - q``: units are sold twice and the stock no longer adds up.
    """

    name: ClassVar[str] = "naive"
    safe: ClassVar[bool] = False

    def take(
        self,
        session: Session,
        wanted: Mapping[int, int],
        prices: Mapping[int, Decimal],
        judge: Judge | None = None,
    ) -> None:
        items = ItemRepository(session)
        seen = items.read(wanted)
        if judge is not None:
            judge({item.id: item for item in seen})
        short = shortages(seen, wanted)
        if short:
            raise insufficient(short)
        for item in seen:
            items.overwrite_stock(item.id, item.stock - Decimal(wanted[item.id]))


STRATEGIES: dict[str, type[StockStrategy]] = {
    cls.name: cls for cls in (ForUpdateStrategy, AtomicStrategy, NaiveStrategy)
}


def strategy_named(name: str, *, allow_unsafe: bool = False) -> StockStrategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown STOCK_STRATEGY {name!r}; choose one of {known}") from None
    if not cls.safe and not allow_unsafe:
        raise ValueError(
            f"STOCK_STRATEGY={name} can oversell and exists only for demonstrations; "
            "set ALLOW_UNSAFE_STRATEGY=true to use it anyway"
        )
    return cls()
