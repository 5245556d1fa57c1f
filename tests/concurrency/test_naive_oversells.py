"""The 12.12 bug, reproduced on purpose: the negative control's naive pay
(ecommerce/flashsale/naive.py) loses an update when two pays interleave, and the
invariant checker catches it; the shop's pay, interleaved the same way, does
not. This is what makes the checks in the other concurrency tests able to fail."""

import datetime as dt
import threading
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.flashsale import naive
from ecommerce.services import payment
from ecommerce.services.invariants import find_violations
from tests.helpers import commit_cart_lines, commit_item, wait_until_a_backend_waits_on_a_lock


def interleave(committed, shop, pay, item_id) -> dict[str, object]:
    """A pays for one unit and is held at its COMMIT, its writes done and its
    row locks held; B pays for one unit meanwhile, until it waits on A's row;
    then A commits, and B finishes. Returns each buyer's answer."""
    a_holds, release_a = threading.Event(), threading.Event()
    commits = []

    def hold_the_first_commit(session) -> None:
        commits.append(session)
        if len(commits) == 1:  # A's
            a_holds.set()
            release_a.wait(10)

    shop.before_commit = hold_the_first_commit
    results: dict[str, object] = {}

    def buy(user: str) -> None:
        try:
            results[user] = pay(shop, user, Decimal("1.00"))
        except Exception as refused:
            results[user] = refused

    try:
        first = threading.Thread(target=buy, args=("a",))
        first.start()
        assert a_holds.wait(10)
        second = threading.Thread(target=buy, args=("b",))
        second.start()
        wait_until_a_backend_waits_on_a_lock(committed)  # B, on A's row
        release_a.set()
        first.join(10)
        second.join(10)
    finally:
        shop.before_commit = None
    return results


def stock_of(committed, item_id) -> Decimal:
    with committed.connect() as conn:
        return conn.execute(text("SELECT stock FROM items WHERE id = :i"), {"i": item_id}).scalar()


def test_naive_pays_oversell_and_the_invariant_checker_names_the_item(committed, make_app):
    """Both read 5 before either wrote; both write 4: two units sold, one taken."""
    item = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("a", item, 1), ("b", item, 1)])
    shop = make_app(pay_combining=False).extensions["shop"]

    results = interleave(committed, shop, naive.pay, item)

    assert sorted(results) == ["a", "b"]  # both were told they bought one
    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert stock_of(committed, item) == Decimal("4.00")
    with Session(committed) as session:
        violations = find_violations(session, dt.datetime.now(dt.UTC))
    assert [v.check for v in violations] == ["stock_not_conserved"]
    assert violations[0].row["item_id"] == item
    assert violations[0].row["sold"] == 2 and violations[0].row["stock"] == Decimal("4.00")


def test_the_shops_pay_does_not(committed, make_app):
    """B's locking read waits for A's commit and then sees 4: two units sold, two taken."""
    item = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("a", item, 1), ("b", item, 1)])
    shop = make_app(pay_combining=False).extensions["shop"]

    results = interleave(committed, shop, payment.pay, item)

    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert stock_of(committed, item) == Decimal("3.00")
    with Session(committed) as session:
        assert find_violations(session, dt.datetime.now(dt.UTC)) == []


def test_the_simulators_negative_control_serves_the_naive_pay(monkeypatch, database_url, committed):
    """`flask flashsale --strategy naive` serves ecommerce.flashsale.naive_app:app,
    whose pay endpoint runs the naive pay as the shop's endpoint calls a pay
    (before, the endpoint's admission tokens made every naive pay a 500)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    from ecommerce.flashsale import naive_app

    shop = naive_app.app.extensions["shop"]
    assert shop.pay_engine is naive.pay
    item = commit_item(committed, "Hot", "1.00", 5)
    commit_cart_lines(committed, [("ann", item, 2)])
    paid = naive_app.app.test_client().post("/cart/ann/pay", json={"amount": "2.00"})
    assert paid.status_code == 201, paid.get_json()
    assert stock_of(committed, item) == Decimal("3.00")
    shop.close()
