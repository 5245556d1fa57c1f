"""Use cases. Each public function of a service module is one use case: it opens
its one transaction (:meth:`Shop.transaction`: a unit of work,
ecommerce/services/transactions.py),
applies the Idempotency-Key inside it when the use case takes one, and returns
a result value (ecommerce/services/results.py) or raises an ecommerce.errors
exception. Callers (the HTTP API, the CLI, the tests) never see a session.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from ecommerce.config import Settings
from ecommerce.database.engine import Database
from ecommerce.gateway import HttpGateway
from ecommerce.observability import metrics
from ecommerce.services.combining import Combiner, CombiningPolicy
from ecommerce.services.roomboard import RoomBoard
from ecommerce.services.soldout import SoldOutMarks
from ecommerce.services.transactions import TransactionPolicy, run_in_transaction

T = TypeVar("T")


class PayEngine(Protocol):
    """What the pay endpoint calls: ``services.payment.pay`` in the shop; the
    simulator's negative control serves ``flashsale.naive.pay`` instead."""

    def __call__(
        self,
        shop: Shop,
        user_id: str,
        amount: Decimal,
        idempotency_key: str | None = None,
        admission_tokens: Sequence[str] = (),
    ) -> Any: ...


@dataclass
class Shop:
    """Everything a use case needs: the database, how to run a transaction, the
    clock, and this process's combiners and sold-out marks."""

    db: Database
    policy: TransactionPolicy
    idempotency_ttl_s: int = 24 * 3600
    # None: every pay is a batch of one, in its request's thread (PAY_COMBINING=false).
    combining: CombiningPolicy | None = None
    # None: every add and cart read is a batch of one (CART_COMBINING=false).
    cart_combining: CombiningPolicy | None = None
    # The one clock every time decision is taken at (UTC; docs/DESIGN.md, "One
    # clock"); tests set their own.
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    # The pay the endpoint runs (build_shop: services.payment.pay).
    pay_engine: PayEngine | None = None
    # Told the kind ("pay", "add", "read") and size of every batch run, beside
    # the metrics (a test records them).
    batch_observer: Callable[[str, int], None] | None = None
    # Called in every unit of work with its session right before its COMMIT,
    # the transaction's writes done and its locks held (a test holds one there).
    before_commit: Callable[[Session], None] | None = None
    sold_out: SoldOutMarks = field(default_factory=SoldOutMarks)
    # The payment provider; None: "instant", a pay is paid in its own transaction.
    gateway: HttpGateway | None = None
    reservation_ttl_s: int = 900
    # HAProxy's CSV statistics, for the console (ecommerce/services/balancer.py).
    balancer_stats_url: str | None = None
    # The waiting rooms (ecommerce/services/rooms/): this process's view of the
    # open lines, the key that signs place and admission tokens, a poll's
    # shortest delay, a new room's defaults.
    room_board: RoomBoard = field(default_factory=RoomBoard)
    secret_key: str = ""
    room_poll_ms: int = 1000
    room_admission_ttl_s: int = 300
    room_max_admitted: int = 100
    # This process's combiners by name, each created by the first request that
    # needs it, in the process that runs it (after gunicorn's fork).
    _combiners: dict[str, Combiner[Any, Any]] = field(default_factory=dict, repr=False)
    _combiners_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def charge_budget_s(self) -> float:
        """How long a keyed pay may take to reserve its order (the combining
        queue, the item lock, a second more) and still start its charge."""
        queued = self.combining.wait_s if self.combining is not None else 0.0
        return queued + self.policy.lock_timeout_ms / 1000 + 1.0

    @property
    def charge_lease_s(self) -> float:
        """How long after a keyed pay's order was written its first request may
        still be charging the provider: the budget to start, the provider's
        deadline, and a second for the instances' clocks to drift. A
        replay of the key within it is refused as in use (services/charging.py)."""
        deadline = self.gateway.timeout_s if self.gateway is not None else 0.0
        return self.charge_budget_s + deadline + 1.0

    def transaction(self, work: Callable[[Session], T], name: str) -> T:
        return run_in_transaction(
            self.db.session, work, self.policy, name=name, before_commit=self.before_commit
        )

    def combiner(
        self,
        name: str,
        policy: CombiningPolicy,
        run_batch: Callable[[Sequence[Any]], list[Any]],
        run_alone: Callable[[Any], Any],
        key_in_use: Callable[[], Exception] | None = None,
    ) -> Combiner[Any, Any]:
        """This process's combiner called ``name``, made with these the first time
        (ecommerce/services/combining.py)."""
        with self._combiners_lock:
            found = self._combiners.get(name)
            if found is None:
                # Each combining thread keeps a connection of its own: a batch
                # never waits for the pool behind request greenlets.
                found = Combiner(
                    policy,
                    run_batch,
                    run_alone,
                    key_in_use,
                    name=name,
                    thread_context=self.db.own_connection,
                )
                self._combiners[name] = found
            return found

    def observe_batch(self, kind: str, size: int) -> None:
        """A batch of ``size`` requests of ``kind`` runs: the metrics, the observer."""
        if kind == "pay":
            metrics.observe_batch(size)
        else:
            metrics.observe_cart_batch(kind, size)
        if self.batch_observer is not None:
            self.batch_observer(kind, size)

    def waiting_in(self, name: str) -> int:
        """Requests waiting in this process's combiner called ``name`` (0 if none
        was made): what an operator's metrics or a test observe."""
        with self._combiners_lock:
            found = self._combiners.get(name)
        return found.waiting if found is not None else 0

    def close(self) -> None:
        """Stop this process's combiners (they give their connections back), then
        close the database's pooled connections."""
        with self._combiners_lock:
            combiners = list(self._combiners.values())
        for combiner in combiners:
            combiner.stop()
        self.db.dispose()


def build_shop(settings: Settings, pay_engine: PayEngine | None = None) -> Shop:
    """The shop a process runs, from its settings; ``pay_engine``: the pay its
    endpoint runs (default: services.payment.pay)."""
    from ecommerce.services import payment  # it needs Shop: imported once built

    policy = TransactionPolicy(
        lock_timeout_ms=settings.lock_timeout_ms,
        statement_timeout_ms=settings.statement_timeout_ms,
        idle_in_transaction_timeout_ms=settings.idle_in_transaction_timeout_ms,
        retries=settings.transaction_retries,
        retry_after_s=settings.retry_after_s,
    )
    combining_policy = CombiningPolicy(
        batch_max=settings.combining_batch_max,
        queue_max=settings.combining_queue_max,
        wait_s=settings.combining_queue_wait_ms / 1000,
        retry_after_s=settings.retry_after_s,
    )
    return Shop(
        db=Database(settings),
        policy=policy,
        pay_engine=pay_engine or payment.pay,
        idempotency_ttl_s=settings.idempotency_ttl_s,
        combining=combining_policy if settings.pay_combining else None,
        cart_combining=combining_policy if settings.cart_combining else None,
        sold_out=SoldOutMarks(settings.sold_out_recheck_ms / 1000),
        gateway=(
            HttpGateway(settings.payment_gateway_url, settings.payment_gateway_timeout_ms / 1000)
            if settings.payment_gateway_url
            else None
        ),
        reservation_ttl_s=settings.reservation_ttl_s,
        balancer_stats_url=settings.balancer_stats_url,
        # A join's transaction, one INSERT and its COMMIT, each awaited at most
        # statement_timeout + 2 s (ecommerce/database/cooperative.py), has ended within
        # this: a line reads again the arrival numbers younger than it.
        room_board=RoomBoard(
            settings.queue_refresh_ms / 1000,
            settle_s=2 * (settings.statement_timeout_ms / 1000 + 2),
        ),
        secret_key=settings.secret_key,
        room_poll_ms=settings.queue_poll_ms,
        room_admission_ttl_s=settings.queue_admission_ttl_s,
        room_max_admitted=settings.queue_max_admitted,
    )
