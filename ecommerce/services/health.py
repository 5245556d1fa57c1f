"""Readiness: can this instance serve? (Liveness needs no database: the API answers it.)"""

from __future__ import annotations

from ecommerce.database import migrations
from ecommerce.errors import NotReady, ServiceBusy
from ecommerce.repositories import SchemaRepository
from ecommerce.services import Shop


def _schema_and_role(session) -> tuple[str | None, bool]:
    schema = SchemaRepository(session)
    return schema.revision(), schema.takes_writes()


def readiness(shop: Shop) -> str:
    """The schema revision when the database answers and is at the migrations'
    head; raises NotReady otherwise (nothing is written, nothing is waited for
    beyond the usual bounds)."""
    try:
        revision, writable = shop.transaction(_schema_and_role, "ready")
    except ServiceBusy as busy:
        raise NotReady(f"the database does not answer: {busy.message}") from busy
    if not writable:
        # A pooled connection to a node that is now a standby (a failover behind
        # a pooler): no pay can commit here. Every connection is given up, so the
        # next check connects afresh, host by host, to whichever takes writes.
        shop.db.forget_connections()
        raise NotReady("the database is a standby (read-only): no primary reached yet")
    head = migrations.head_revision()
    if revision != head:
        raise NotReady(
            f"the database schema is at {revision or 'no revision'}, not {head}: "
            "run `flask db upgrade`",
            details={"schema": revision, "expected": head},
        )
    return revision


def synchronous_standbys(shop: Shop) -> int | None:
    """How many standbys confirm the primary's commits (for /metrics); None when
    the shop's role may not see them, or the database did not answer."""
    try:
        return shop.transaction(
            lambda session: SchemaRepository(session).synchronous_standbys(), "standbys"
        )
    except ServiceBusy:
        return None
