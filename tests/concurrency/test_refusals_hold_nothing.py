"""A refusal costs the hot row nothing, combined or alone (a batch of one): a
buyer refused whatever the item rows say never waits for them, and a batch that
wrote nothing rolls back instead of committing (a COMMIT of a transaction that
only locked rows still flushes and waits for the synchronous standby)."""

from decimal import Decimal

import pytest
from sqlalchemy import event, text

from ecommerce.errors import AmountMismatch, InsufficientStock, OrderTooLarge
from ecommerce.services import cart, payment
from tests.helpers import commit_cart_lines, commit_item


@pytest.fixture
def transactions_ended(storm_shop):
    """A shop (lock_timeout 2 s) and the count of its COMMITs and ROLLBACKs."""
    shop = storm_shop(2, lock_timeout_ms=2000)
    ended = {"commit": 0, "rollback": 0}

    def count(kind):
        def counted(conn) -> None:
            ended[kind] += 1

        return counted

    handlers = {kind: count(kind) for kind in ended}
    for kind, handler in handlers.items():
        event.listen(shop.db.engine, kind, handler)
    yield shop, ended
    for kind, handler in handlers.items():
        event.remove(shop.db.engine, kind, handler)


def test_a_wrong_amount_is_answered_while_another_holds_the_item_row(committed, storm_shop):
    shop = storm_shop(2, lock_timeout_ms=2000)
    hot = commit_item(committed, "Hot", "1.00", 10)
    dear = commit_item(committed, "Dear", "99999999.99", 5)
    commit_cart_lines(committed, [("u", hot, 2), ("rich", hot, 1), ("rich", dear, 101)])
    with committed.connect() as holder:
        holder.execute(text("SELECT 1 FROM items WHERE id = :i FOR UPDATE"), {"i": hot})
        # Waiting on the row would end in 503 after lock_timeout (2 s).
        with pytest.raises(AmountMismatch):
            payment.pay(shop, "u", Decimal("1.00"))
        with pytest.raises(OrderTooLarge):
            payment.pay(shop, "rich", Decimal("1.00"))
        holder.rollback()
    assert payment.pay(shop, "u", Decimal("2.00")).total == Decimal("2.00")


def test_a_refused_pay_rolls_back_and_a_paid_one_commits(committed, transactions_ended):
    shop, ended = transactions_ended
    gone = commit_item(committed, "Gone", "1.00", 0)
    plenty = commit_item(committed, "Plenty", "1.00", 10)
    commit_cart_lines(committed, [("late", gone, 1), ("payer", plenty, 1)])

    with pytest.raises(InsufficientStock):
        payment.pay(shop, "late", Decimal("1.00"))
    assert ended["commit"] == 0 and ended["rollback"] >= 1

    payment.pay(shop, "payer", Decimal("1.00"))
    assert ended["commit"] == 1


def test_a_refused_add_rolls_back_and_an_accepted_one_commits(committed, transactions_ended):
    shop, ended = transactions_ended
    few = commit_item(committed, "Few", "1.00", 2)

    with pytest.raises(InsufficientStock):
        cart.add_to_cart(shop, "u", few, 3)
    assert ended["commit"] == 0 and ended["rollback"] >= 1
    assert cart.view_cart(shop, "u").lines == []

    cart.add_to_cart(shop, "u", few, 2)
    assert ended["commit"] >= 1
