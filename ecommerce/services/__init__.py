"""Use cases. Each public function of a service module is one use case: it opens
its one transaction (:meth:`Shop.transaction`, i.e. ``with session.begin():``),
applies the Idempotency-Key inside it when the use case takes one, and returns
a result value (ecommerce/services/results.py) or raises an ecommerce.errors
exception. Callers (the HTTP API, the CLI, the tests) never see a session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from ecommerce.config import Settings
from ecommerce.db import Database
from ecommerce.services.stock import StockStrategy, strategy_named
from ecommerce.services.transactions import TransactionPolicy, run_in_transaction

T = TypeVar("T")


@dataclass
class Shop:
    """Everything a use case needs: the database, how to run a transaction, and
    how stock is taken."""

    db: Database
    policy: TransactionPolicy
    stock: StockStrategy
    idempotency_ttl_s: int = 24 * 3600

    def transaction(self, work: Callable[[Session], T], name: str) -> T:
        with self.db.session() as session:
            return run_in_transaction(session, work, self.policy, name=name)


def build_shop(settings: Settings) -> Shop:
    """The shop a process runs, from its settings (refuses unsafe combinations)."""
    stock = strategy_named(settings.stock_strategy, allow_unsafe=settings.allow_unsafe_strategy)
    if settings.environment == "production" and not stock.safe:
        raise ValueError("an unsafe STOCK_STRATEGY is never allowed in production")
    policy = TransactionPolicy(
        lock_timeout_ms=settings.lock_timeout_ms,
        statement_timeout_ms=settings.statement_timeout_ms,
        retries=settings.transaction_retries,
        retry_after_s=settings.retry_after_s,
    )
    return Shop(
        db=Database(settings),
        policy=policy,
        stock=stock,
        idempotency_ttl_s=settings.idempotency_ttl_s,
    )
