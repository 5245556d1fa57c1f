"""An order's life (ecommerce/domain/orders.py) without a database: the
confirmation's decision table, the endings, the expiry, and money kept = orders
paid over every sequence of events, checked against a plain model of the
provider's books written apart from the rules."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecommerce import models
from ecommerce.domain import orders as life
from ecommerce.errors import Conflict

NOW = dt.datetime(2026, 12, 12, 0, 0, tzinfo=dt.UTC)


def order(status: str = life.PENDING, charge: str = life.CHARGE_OPEN, **more) -> life.Order:
    return life.Order(1, status, charge, **more)


def test_the_models_spell_the_rules_statuses():
    assert models.ORDER_STATUSES == life.STATUSES
    assert models.CHARGE_STATES == life.CHARGE_STATES


PAY, BACK, REFUND, SEND = "payment", "stock back", "refund", "send refund"


@pytest.mark.parametrize(
    ("status", "charge", "succeeded", "becomes", "effects"),
    [
        ("pending", "open", True, ("paid", "settled"), {PAY}),
        ("pending", "open", False, ("payment_failed", "settled"), {BACK}),
        ("cancelled", "open", True, ("refunded", "settled"), {PAY, REFUND, SEND}),
        ("expired", "settled", True, ("refunded", "settled"), {PAY, REFUND, SEND}),
        ("payment_failed", "settled", True, ("refunded", "settled"), {PAY, REFUND, SEND}),
        ("cancelled", "open", False, ("cancelled", "settled"), set()),
        ("paid", "settled", True, None, set()),
        ("refunded", "settled", True, None, set()),
        ("expired", "settled", False, None, set()),
    ],
)
def test_the_confirmation_decision_table(status, charge, succeeded, becomes, effects):
    change = life.confirmation(order(status, charge), succeeded)
    if becomes is None:
        assert not change.changes and (change.status, change.charge) == (status, charge)
        return
    assert change.changes and (change.status, change.charge) == becomes
    flags = {
        PAY: change.record_payment,
        BACK: change.stock_back == "release",
        REFUND: change.record_refund and not change.refund_confirmed,
        SEND: change.send_refund,
    }
    assert {name for name, on in flags.items() if on} == effects


def test_a_cancel_or_refund_ends_pending_and_paid_orders_and_refuses_the_rest():
    cancelled = life.ending(order(), provider=True, voided=True)
    assert (cancelled.status, cancelled.charge, cancelled.stock_back) == (
        "cancelled",
        "settled",
        "release",
    )
    assert not cancelled.record_refund and not cancelled.send_refund
    # without a provider the money goes back at once; with one, it is sent after
    alone = life.ending(order("paid", "instant"), provider=False, voided=False)
    assert (alone.status, alone.stock_back, alone.record_refund) == ("refunded", "refund", True)
    assert alone.refund_confirmed and not alone.send_refund
    sent = life.ending(order("paid", "settled"), provider=True, voided=False)
    assert sent.record_refund and not sent.refund_confirmed and sent.send_refund
    # ended before: as it is, an unconfirmed refund sent again
    unconfirmed = order("refunded", "settled", refund_unconfirmed=True)
    again = life.ending(unconfirmed, provider=True, voided=False)
    assert not again.changes and again.send_refund
    assert not life.ending(order("cancelled", "settled"), provider=True, voided=False).send_refund
    for status in ("expired", "payment_failed"):
        with pytest.raises(Conflict, match=f"order 1 is {status}: there is nothing to end"):
            life.ending(order(status, "settled"), provider=True, voided=False)


def test_only_a_lapsed_pending_reservation_expires():
    due = order(expires_at=NOW)
    assert life.expiry(due, NOW - dt.timedelta(seconds=1), voided=True).changes is False
    expired = life.expiry(due, NOW, voided=True)
    assert (expired.status, expired.charge, expired.stock_back) == ("expired", "settled", "release")
    assert life.expiry(order(), NOW, voided=False).changes is False  # no expiry set
    assert life.expiry(replace(due, status="paid"), NOW, voided=True).changes is False


# --- money kept = orders paid, over every history -------------------------------


@dataclass
class Provider:
    """The provider's books, a plain model written apart from the rules: a
    charge is decided once (a void decides it failed); it keeps the money of a
    succeeded charge until it refunds it."""

    outcome: bool | None = None  # None: not decided yet
    refunded: int = 0

    def decide(self, succeeded: bool) -> None:
        if self.outcome is None:
            self.outcome = succeeded

    def void(self) -> bool:
        """Closes the charge: its final outcome (a charge not yet decided never
        succeeds after it)."""
        self.decide(False)
        assert self.outcome is not None
        return self.outcome

    @property
    def kept(self) -> int:
        return (1 if self.outcome else 0) - self.refunded


@dataclass
class Shop:
    """The services' part, reduced to what they do with the rules' answers:
    apply the transition; count the payments and refunds recorded; send a
    refund the transition owes (the provider confirms it)."""

    provider: Provider
    state: life.Order
    payments: int = 0
    refunds: int = 0

    def apply(self, change: life.Transition) -> None:
        if change.changes:
            self.payments += change.record_payment
            self.refunds += change.record_refund
            self.state = replace(
                self.state, status=change.status, charge=change.charge, refund_unconfirmed=False
            )
        if change.send_refund:
            self.provider.refunded += 1

    def confirm(self) -> None:  # the webhook, or reconcile-payments
        if self.provider.outcome is not None:
            self.apply(life.confirmation(self.state, self.provider.outcome))

    def end(self) -> None:  # a buyer's cancel, an admin's refund
        voided = False
        if self.state.status == life.PENDING:
            if self.provider.void():
                self.apply(life.confirmation(self.state, True))
            else:
                voided = True
        with contextlib.suppress(Conflict):  # expired or failed: nothing to end
            self.apply(life.ending(self.state, provider=True, voided=voided))

    def end_offline(self) -> None:
        """A pending order cancelled by an instance with no provider configured
        (or before a release that voids): its charge is left open."""
        if self.state.status == life.PENDING:
            self.apply(life.ending(self.state, provider=False, voided=False))

    def expire(self) -> None:  # release-expired, once the reservation lapsed
        if self.state.status != life.PENDING:
            return
        if self.provider.void():
            self.apply(life.confirmation(self.state, True))
            return
        self.apply(life.expiry(self.state, NOW, voided=True))


EVENTS = ("succeeds", "fails", "confirm", "end", "end offline", "expire")


@given(st.lists(st.sampled_from(EVENTS), max_size=8))
def test_money_kept_equals_orders_paid_whatever_happens_in_whatever_order(events):
    provider = Provider()
    shop = Shop(provider, order(expires_at=NOW))
    for event in events:
        if event == "succeeds":
            provider.decide(True)
        elif event == "fails":
            provider.decide(False)
        elif event == "confirm":
            shop.confirm()
        elif event == "end":
            shop.end()
        elif event == "end offline":
            shop.end_offline()
        else:
            shop.expire()
        if shop.state.charge == life.CHARGE_SETTLED:  # the provider's word recorded
            assert shop.payments - shop.refunds == provider.kept
    # reconcile-payments: every open charge asked about, its answer recorded
    if shop.state.charge == life.CHARGE_OPEN:
        provider.void()
        shop.confirm()
    assert shop.state.charge != life.CHARGE_OPEN
    assert provider.kept == (1 if shop.state.status == life.PAID else 0)
    assert shop.payments - shop.refunds == provider.kept
    assert shop.state.status in life.STATUSES
