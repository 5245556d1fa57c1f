"""Repositories: all SQL lives in this package, one module per aggregate, each
statement right above the method that runs it. Each repository takes a session
and never commits; the service that calls it owns the transaction.

What they return: every read gives frozen dataclasses (``ItemRow`` for an item,
``CartLineRow`` for a cart line with its item, ``OrderRecord`` with its
``OrderLineRecord`` lines, ``StoredResult`` for an idempotency key), never ORM
objects or raw rows, so nothing a service holds can lazy-load or change behind
its back. Writes return the few values the caller needs (an id, a bool).

Locking conventions (see docs/DESIGN.md): cart rows are locked FOR UPDATE
before item rows, always (carts.py); item rows are locked FOR NO KEY UPDATE, in
ascending id order (items.py).

The statements are built once, at import, as attributes of their repositories
(SQLAlchemy caches their compiled form): the flash-sale simulator compiles the
pay's very objects into its pgbench script (``CartRepository.LOCK_CARTS_FOR_PAY``
and the rest), so the database ceiling it measures is for exactly the SQL the
shop sends.
"""

from ecommerce.repositories.carts import AddedLine, CartLineRow, CartRepository
from ecommerce.repositories.console import (
    ConsoleLinkRepository,
    ConsoleRepository,
    DatabaseStateRow,
)
from ecommerce.repositories.idempotency import IdempotencyRepository, NewKeyRecord, StoredResult
from ecommerce.repositories.invariants import InvariantRepository, StockBookRow, ViolationRow
from ecommerce.repositories.items import ItemAccountRow, ItemRepository, ItemRow
from ecommerce.repositories.orders import (
    NewOrder,
    NewOrderLine,
    OrderLineRecord,
    OrderRecord,
    OrderRepository,
)
from ecommerce.repositories.schema import SchemaRepository

__all__ = [
    "AddedLine",
    "CartLineRow",
    "CartRepository",
    "ConsoleLinkRepository",
    "ConsoleRepository",
    "DatabaseStateRow",
    "IdempotencyRepository",
    "InvariantRepository",
    "ItemAccountRow",
    "ItemRepository",
    "ItemRow",
    "NewKeyRecord",
    "NewOrder",
    "NewOrderLine",
    "OrderLineRecord",
    "OrderRecord",
    "OrderRepository",
    "SchemaRepository",
    "StockBookRow",
    "StoredResult",
    "ViolationRow",
]
