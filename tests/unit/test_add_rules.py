"""Whether an add may stay in the cart (ecommerce/domain/adds.py), without a
database: the rules, and a batch of adds judged as each add would be alone."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ecommerce.domain.adds import Add, judge


@dataclass(frozen=True)
class Item:
    name: str
    stock: Decimal
    per_user_limit: int | None = None


def codes(judged) -> list[str]:
    return ["ok" if r is None else r.code for r in judged.refusals]


def test_limit_before_stock_and_unknown_items():
    items = {("u", 1): Item("a", Decimal(3), per_user_limit=2)}
    judged = judge(
        [Add("u", 1, 2), Add("u", 1, 1), Add("u", 9, 1)], items, {("u", 1): 0}, {("u", 1): 1}
    )
    # 1 held + 2 wanted > 2: the limit, though stock (3) would allow it
    assert codes(judged) == ["limit_exceeded", "ok", "not_found"]
    assert judged.quantities == {("u", 1): 1}


def test_stock_counts_the_line_as_the_adds_before_left_it():
    items = {("u", 1): Item("a", Decimal(3))}
    judged = judge([Add("u", 1, 2), Add("u", 1, 2), Add("u", 1, 1)], items, {("u", 1): 0}, {})
    assert codes(judged) == ["ok", "insufficient_stock", "ok"]
    assert judged.quantities == {("u", 1): 3}
    # each accepted add sees its user's lines as the adds up to it left them
    assert judged.seen == {0: {1: 2}, 2: {1: 3}}


LINES = [("ann", 1), ("ann", 2), ("bob", 1)]


@st.composite
def add_batches(draw: st.DrawFn):
    items = {
        ln: Item(
            f"i{ln[1]}",
            Decimal(draw(st.integers(0, 6))),
            draw(st.one_of(st.none(), st.integers(1, 4))),
        )
        for ln in LINES
    }
    before = {ln: draw(st.integers(0, 3)) for ln in LINES}
    held = {ln: draw(st.integers(0, 2)) for ln in LINES}
    adds = [
        Add(*draw(st.sampled_from([*LINES, ("ann", 7)])), draw(st.integers(1, 3)))
        for _ in range(draw(st.integers(0, 8)))
    ]
    return adds, items, before, held


class SequentialCarts:
    """The oracle: a plain model of the carts taking adds one after another,
    each alone, written from the documented rules and not from the code under
    test: an unknown item is not found; a line may not hold more than the
    per-buyer limit less the units held in orders, then not more than the
    stock; a refused add leaves the line as it was."""

    def __init__(self, items, before, held) -> None:
        self.items, self.lines, self.held = items, dict(before), held

    def add(self, add: Add) -> str:
        line = (add.user_id, add.item_id)
        if line not in self.items:
            return "not_found"
        item, wanted = self.items[line], self.lines[line] + add.quantity
        if (
            item.per_user_limit is not None
            and self.held.get(line, 0) + wanted > item.per_user_limit
        ):
            return "limit_exceeded"
        if wanted > item.stock:
            return "insufficient_stock"
        self.lines[line] = wanted
        return "ok"


@settings(max_examples=300, deadline=None)
@given(add_batches())
def test_each_add_of_a_batch_is_judged_as_alone_in_its_place(batch):
    """Add n gets what the sequential model tells it alone, on its line as the
    accepted adds before it left it; refused units never stay."""
    adds, items, before, held = batch
    together = judge(adds, items, before, held)
    model = SequentialCarts(items, before, held)
    assert codes(together) == [model.add(add) for add in adds]
    assert together.quantities == model.lines
    for ln, quantity in together.quantities.items():
        # a line only grows by accepted adds, never past the stock
        assert quantity == before[ln] or quantity <= items[ln].stock
