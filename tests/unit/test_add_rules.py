"""Whether an add may stay in the cart (ecommerce/domain/adds.py), without a
database: the rules, and a batch of adds judged as each add would be alone."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ecommerce.domain.adds import Add, judge, refusal


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


@settings(max_examples=300, deadline=None)
@given(add_batches())
def test_each_add_of_a_batch_is_judged_as_alone_in_its_place(batch):
    """Add n gets what ``refusal`` tells it alone, on its line as the accepted
    adds before it left it; refused units never stay."""
    adds, items, before, held = batch
    together = judge(adds, items, before, held)
    quantities = dict(before)
    for n, add in enumerate(adds):
        line = (add.user_id, add.item_id)
        mine = together.refusals[n]
        if line not in items:
            assert mine is not None and mine.code == "not_found"
            continue
        expected = refusal(
            add.item_id, items[line], held.get(line, 0), quantities[line] + add.quantity
        )
        assert (mine is None) == (expected is None)
        if mine is not None:
            assert (mine.code, mine.message, mine.details) == (
                expected.code,
                expected.message,
                expected.details,
            )
        else:
            quantities[line] += add.quantity
    assert together.quantities == quantities
    for ln, quantity in together.quantities.items():
        # a line only grows by accepted adds, never past the stock
        assert quantity == before[ln] or quantity <= items[ln].stock
