"""What every repository shares: a session it never commits, and how it runs a
statement on that session's connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable


class _Repository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _execute(self, statement: Executable, params: dict[str, Any]) -> CursorResult[Any]:
        """Run a Core statement on the session's connection, inside its transaction.

        Same SQL and transaction as ``session.execute``, without the ORM's
        per-execution bookkeeping (a large share of a statement's client CPU on
        the pay path).
        """
        return self.session.connection().execute(statement, params)


def sql_string(value: str) -> str:
    """``value`` as an SQL string literal, to spell a status (a constant of
    ecommerce.models) into a statement's text: ``pending`` -> ``'pending'``."""
    return "'" + value.replace("'", "''") + "'"
