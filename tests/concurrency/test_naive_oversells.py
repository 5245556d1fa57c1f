"""The 12.12 bug, reproduced on purpose: the unsafe strategy loses an update when
two pays interleave, and the invariant checker catches it. This is what makes the
checks in the other concurrency tests able to fail."""

import threading
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.services import payment
from ecommerce.services.invariants import find_violations
from ecommerce.services.stock import ForUpdateStrategy, NaiveStrategy
from tests.helpers import commit_cart_lines, commit_item, wait_until_a_backend_waits_on_a_lock


def interleave(engine, strategy, item_id) -> Decimal:
    """A takes 1 unit and holds its transaction open; B takes 1 unit meanwhile;
    then A commits and B commits. Returns the final stock."""
    prices = {item_id: Decimal("1.00")}
    with Session(engine) as a, a.begin():
        strategy.take(a, {item_id: 1}, prices)

        def buyer_b() -> None:
            with Session(engine) as b, b.begin():
                strategy.take(b, {item_id: 1}, prices)

        thread = threading.Thread(target=buyer_b)
        thread.start()
        wait_until_a_backend_waits_on_a_lock(engine)  # B, on A's row
    thread.join(10)
    with engine.connect() as conn:
        return conn.execute(text("SELECT stock FROM items WHERE id = :i"), {"i": item_id}).scalar()


def test_naive_loses_a_unit_when_two_pays_interleave(committed):
    item = commit_item(committed, "Hot", "1.00", 5)
    # Both read 5 before either wrote; both write 4: two units sold, one taken.
    assert interleave(committed, NaiveStrategy(), item) == Decimal("4.00")


def test_for_update_does_not(committed):
    item = commit_item(committed, "Hot", "1.00", 5)
    # B's locking read waits for A's commit and then sees 4.
    assert interleave(committed, ForUpdateStrategy(), item) == Decimal("3.00")


def test_naive_pays_oversell_and_the_invariant_checker_names_the_item(committed, make_app):
    """Through the real pay: A has taken its unit and is paused inside its
    transaction (the strategy is wrapped by the test); B reads the old stock and
    waits on A's row; A commits; B overwrites. Two orders, one unit gone."""
    item = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("a", item, 1), ("b", item, 1)])
    shop = make_app(stock_strategy="naive", allow_unsafe_strategy=True).extensions["shop"]
    a_holds, release_a = threading.Event(), threading.Event()
    naive = shop.stock

    class PauseAfterTheFirstTake:
        name, safe = naive.name, naive.safe

        def __init__(self) -> None:
            self.calls = 0

        def take(self, session, wanted, prices, judge=None) -> None:
            naive.take(session, wanted, prices, judge)
            self.calls += 1
            if self.calls == 1:  # A's, which runs alone until it pauses here
                a_holds.set()
                release_a.wait(10)

    shop.stock = PauseAfterTheFirstTake()
    results: dict[str, object] = {}

    def pay(user: str) -> None:
        results[user] = payment.pay(shop, user, Decimal("1.00"))

    first = threading.Thread(target=pay, args=("a",))
    first.start()
    assert a_holds.wait(10)
    second = threading.Thread(target=pay, args=("b",))
    second.start()
    wait_until_a_backend_waits_on_a_lock(committed)  # B, on A's row
    release_a.set()
    first.join(10)
    second.join(10)

    assert sorted(results) == ["a", "b"]  # both were told they bought one
    with Session(committed) as session:
        violations = find_violations(session)
    assert [v.check for v in violations] == ["stock_not_conserved"]
    assert violations[0].row["item_id"] == item
    assert violations[0].row["sold"] == 2 and violations[0].row["stock"] == Decimal("4.00")
