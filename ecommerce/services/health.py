"""Readiness: can this instance serve? (Liveness needs no database: the API answers it.)"""

from __future__ import annotations

from ecommerce import migrations
from ecommerce.errors import NotReady, ServiceBusy
from ecommerce.repositories import SchemaRepository
from ecommerce.services import Shop


def readiness(shop: Shop) -> str:
    """The schema revision when the database answers and is at the migrations'
    head; raises NotReady otherwise (nothing is written, nothing is waited for
    beyond the usual bounds)."""
    try:
        revision = shop.transaction(lambda session: SchemaRepository(session).revision(), "ready")
    except ServiceBusy as busy:
        raise NotReady(f"the database does not answer: {busy.message}") from busy
    head = migrations.head_revision()
    if revision != head:
        raise NotReady(
            f"the database schema is at {revision or 'no revision'}, not {head}: "
            "run `flask db upgrade`",
            details={"schema": revision, "expected": head},
        )
    return revision
