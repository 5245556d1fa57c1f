"""The checkout's rules (ecommerce/domain/checkout.py) without a database: the
refusal order, and the allocation of a batch checked against its definition,
each buyer's answer being the one they would get alone at their place."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ecommerce.domain import checkout
from ecommerce.domain.checkout import Buyer, allocate, refusal
from ecommerce.errors import ShopError

AT = dt.datetime(2026, 12, 12, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Line:
    item_id: int
    name: str
    quantity: int
    price: Decimal
    stock: Decimal = Decimal(100)
    per_user_limit: int | None = None
    sale_starts_at: dt.datetime | None = None
    sale_ends_at: dt.datetime | None = None


@dataclass(frozen=True)
class Row:
    price: Decimal
    stock: Decimal
    per_user_limit: int | None = None
    sale_starts_at: dt.datetime | None = None
    sale_ends_at: dt.datetime | None = None


def line(item_id: int, quantity: int, price: str = "1.00", **rules: object) -> Line:
    return Line(item_id, f"item{item_id}", quantity, Decimal(price), **rules)  # type: ignore[arg-type]


def code(outcome: ShopError | None) -> str:
    return "paid" if outcome is None else outcome.code


def answer(outcome: ShopError | None) -> tuple[str, str, object] | None:
    return None if outcome is None else (outcome.code, outcome.message, outcome.details)


def judge(buyer: Buyer, stock: dict[int, int], **rows: Row) -> str:
    locked = {int(k[1:]): v for k, v in rows.items()}
    available = {i: Decimal(s) for i, s in stock.items()}
    return code(refusal(buyer, available, locked or None, AT))


# --- The refusal order, one rule at a time ------------------------------------------


def test_the_order_a_buyer_is_told():
    closed = line(1, 1, sale_ends_at=AT - HOUR)
    over = line(1, 3, per_user_limit=2)
    assert judge(Buyer("u", Decimal(0), []), {}) == "empty_cart"
    assert judge(Buyer("u", Decimal(1), [line(1, 2, "9999999999.99")]), {1: 5}) == "order_too_large"
    # the window before the limit, the limit before the stock and the amount
    assert judge(Buyer("u", Decimal(9), [over, closed]), {1: 0}) == "sale_ended"
    assert judge(Buyer("u", Decimal(9), [over]), {1: 0}) == "limit_exceeded"
    # short stock is the more useful answer than a wrong amount
    assert judge(Buyer("u", Decimal(9), [line(1, 2)]), {1: 1}) == "insufficient_stock"
    assert judge(Buyer("u", Decimal(9), [line(1, 2)]), {1: 2}) == "amount_mismatch"
    assert judge(Buyer("u", Decimal(2), [line(1, 2)]), {1: 2}) == "paid"


def test_every_rule_is_judged_on_the_locked_rows():
    buyer = Buyer("u", Decimal(2), [line(1, 2)])
    assert judge(buyer, {1: 5}, r1=Row(Decimal("1.50"), Decimal(5))) == "conflict"
    assert judge(buyer, {1: 5}, r1=Row(Decimal(1), Decimal(5), sale_ends_at=AT)) == "sale_ended"
    assert judge(buyer, {1: 5}, r1=Row(Decimal(1), Decimal(5), per_user_limit=1)) == (
        "limit_exceeded"
    )
    starts = Row(Decimal(1), Decimal(5), sale_starts_at=AT + HOUR)
    assert judge(buyer, {1: 5}, r1=starts) == "sale_not_started"


def test_units_held_in_orders_count_toward_the_limit():
    cart = [line(1, 1, per_user_limit=2)]
    assert judge(Buyer("u", Decimal(1), cart, {1: 1}), {1: 5}) == "paid"
    assert judge(Buyer("u", Decimal(1), cart, {1: 2}), {1: 5}) == "limit_exceeded"


def test_a_sold_out_mark_answers_before_the_lock_except_under_a_limit():
    marked = {1: "item1"}
    plain = Buyer("u", Decimal(1), [line(1, 1)])
    assert code(checkout.sold_out_refusal(plain, marked, AT)) == "insufficient_stock"
    assert checkout.sold_out_refusal(plain, {}, AT) is None
    limited = Buyer("u", Decimal(1), [line(1, 1, per_user_limit=5)])
    assert checkout.sold_out_refusal(limited, marked, AT) is None


def test_who_is_refused_even_with_stock_enough():
    good = Buyer("u", Decimal(2), [line(1, 2)])
    assert not checkout.refused_even_with_stock(good, {}, AT)
    assert checkout.refused_even_with_stock(good, {1: "item1"}, AT)
    assert checkout.refused_even_with_stock(replace(good, amount=Decimal(1)), {}, AT)
    assert checkout.refused_even_with_stock(Buyer("u", Decimal(0), []), {}, AT)


# --- The allocation of a batch ---------------------------------------------------

ITEMS = (1, 2, 3)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Buyer], dict[int, Decimal], dict[int, Row]]:
    stock = {i: Decimal(draw(st.integers(0, 6))) for i in ITEMS}
    locked = {
        i: Row(
            Decimal(draw(st.sampled_from(["1.00", "1.00", "2.00"]))),
            stock[i],
            per_user_limit=draw(st.one_of(st.none(), st.integers(1, 3))),
            sale_ends_at=draw(st.sampled_from([None, None, None, AT])),
        )
        for i in ITEMS
    }
    buyers = []
    for _ in range(draw(st.integers(0, 10))):
        user = draw(st.sampled_from(["ann", "bob", "cy", "dee", "eve", "fay"]))
        items = draw(st.lists(st.sampled_from(ITEMS), max_size=3, unique=True))
        cart = [line(i, draw(st.integers(1, 3))) for i in items]
        right = checkout.cart_total(cart)
        amount = draw(st.sampled_from([right, right, right, right + 1]))
        held = {i: draw(st.integers(0, 2)) for i in items if draw(st.booleans())}
        buyers.append(Buyer(user, amount, cart, held))
    return buyers, stock, locked


@settings(max_examples=400, deadline=None)
@given(batches())
def test_allocation_never_exceeds_the_stock(batch):
    buyers, stock, locked = batch
    result = allocate(buyers, stock, locked, AT)
    for item in ITEMS:
        assert result.taken.get(item, 0) <= stock[item]
        assert result.left[item] == stock[item] - result.taken.get(item, 0) >= 0


@settings(max_examples=400, deadline=None)
@given(batches())
def test_a_refused_buyer_takes_nothing_and_a_winner_takes_every_line(batch):
    buyers, stock, locked = batch
    result = allocate(buyers, stock, locked, AT)
    expected: dict[int, int] = {}
    for n in result.winners:
        for ln in buyers[n].cart:
            expected[ln.item_id] = expected.get(ln.item_id, 0) + ln.quantity
    assert result.taken == expected


class SequentialShop:
    """The oracle: a plain model of the shop paying buyers one after another,
    each alone, written from the documented rules and not from the code under
    test. The answer order: empty cart, too large, sale window, per-buyer
    limit, short stock, wrong amount, price changed."""

    def __init__(self, stock: dict[int, Decimal], rows: dict[int, Row]) -> None:
        self.stock = dict(stock)
        self.rows = rows
        self.paid: set[str] = set()

    def pay(self, buyer: Buyer) -> tuple[str, frozenset[int]]:
        """The buyer's answer (its code, and the items short) as they would be
        answered alone now; a buyer who pays takes their units."""
        cart = [] if buyer.user_id in self.paid else list(buyer.cart)
        if not cart:
            return "empty_cart", frozenset()
        total = sum((ln.price * ln.quantity for ln in cart), Decimal(0))
        if total > Decimal("9999999999.99"):
            return "order_too_large", frozenset()
        for ln in cart:
            row = self.rows[ln.item_id]
            if row.sale_starts_at is not None and row.sale_starts_at > AT:
                return "sale_not_started", frozenset()
            if row.sale_ends_at is not None and row.sale_ends_at <= AT:
                return "sale_ended", frozenset()
        for ln in cart:
            limit = self.rows[ln.item_id].per_user_limit
            if limit is not None and buyer.held.get(ln.item_id, 0) + ln.quantity > limit:
                return "limit_exceeded", frozenset()
        short = frozenset(ln.item_id for ln in cart if self.stock[ln.item_id] < ln.quantity)
        if short:
            return "insufficient_stock", short
        if buyer.amount != total:
            return "amount_mismatch", frozenset()
        if any(self.rows[ln.item_id].price != ln.price for ln in cart):
            return "conflict", frozenset()  # a price changed while paying
        for ln in cart:
            self.stock[ln.item_id] -= ln.quantity
        self.paid.add(buyer.user_id)
        return "paid", frozenset()


def told(outcome: ShopError | None) -> tuple[str, frozenset[int]]:
    if outcome is None:
        return "paid", frozenset()
    short = outcome.details.get("items", []) if outcome.code == "insufficient_stock" else []
    return outcome.code, frozenset(entry["item_id"] for entry in short)


@settings(max_examples=400, deadline=None)
@given(batches())
def test_each_answer_is_the_one_that_buyer_gets_alone_in_their_place(batch):
    """Buyer n of the batch gets what the sequential model tells them alone,
    arriving after the buyers before them, and the stock left is the model's."""
    buyers, stock, locked = batch
    together = allocate(buyers, stock, locked, AT)
    model = SequentialShop(stock, locked)
    assert [told(refused) for refused in together.refusals] == [model.pay(b) for b in buyers]
    assert together.left == model.stock


def test_a_hopeless_buyer_is_refused_whatever_the_rows_say():
    wrong = Buyer("u", Decimal(3), [line(1, 2)])
    assert checkout.hopeless(wrong)
    for stock in (0, 2, 9):
        row = Row(Decimal(1), Decimal(stock))
        assert refusal(wrong, {1: Decimal(stock)}, {1: row}, AT) is not None
    assert not checkout.hopeless(replace(wrong, amount=Decimal(2)))
    assert not checkout.hopeless(Buyer("u", Decimal(3), [line(1, 2, per_user_limit=5)]))
    assert not checkout.hopeless(Buyer("u", Decimal(0), []))


def test_a_user_twice_in_a_batch_pays_once():
    cart = [line(1, 1)]
    result = allocate(
        [Buyer("ann", Decimal(1), cart), Buyer("ann", Decimal(1), cart)],
        {1: Decimal(5)},
        {1: Row(Decimal(1), Decimal(5))},
        AT,
    )
    assert [code(r) for r in result.refusals] == ["paid", "empty_cart"]
    assert result.taken == {1: 1}
