"""Use cases. Each public function is one use case and runs as one transaction.

Services get a :class:`Shop` (where the database is, how to run transactions,
which stock strategy to use), open a session, and run their unit of work through
:func:`ecommerce.transactions.run_in_transaction`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from ecommerce.db import Database
from ecommerce.services.stock import StockStrategy
from ecommerce.transactions import TransactionPolicy, run_in_transaction

T = TypeVar("T")


@dataclass
class Shop:
    db: Database
    policy: TransactionPolicy
    stock: StockStrategy
    idempotency_ttl_s: int = 24 * 3600
    # Called by pay with the user id while the stock rows are locked. Only the
    # fault tests set it (TEST_HOLD_LOCKS_USER); see ecommerce/testing_hooks.py.
    after_stock_taken: Callable[[str], None] | None = None

    def transaction(self, work: Callable[[Session], T], name: str) -> T:
        with self.db.session() as session:
            return run_in_transaction(session, work, self.policy, name=name)
