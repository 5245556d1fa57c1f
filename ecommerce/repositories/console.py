"""The admin console: its one-time sign-in links, and what it shows of pending
reservations and of the database server the shop reached."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import insert, text, update

from ecommerce.models import ORDER_STATUS_PENDING, ConsoleLink
from ecommerce.repositories._base import _Repository, sql_string


@dataclass(frozen=True)
class DatabaseStateRow:
    server: str  # address:port of the PostgreSQL server reached
    primary: bool
    standbys: int  # attached
    synchronous: int  # of them, confirming commits


class ConsoleLinkRepository(_Repository):
    def add(self, nonce: str, admin: str, ttl_s: int, now: dt.datetime) -> None:
        self._execute(
            insert(ConsoleLink).values(
                nonce=nonce,
                admin=admin,
                expires_at=now + dt.timedelta(seconds=ttl_s),
            ),
            {},
        )

    def redeem(self, nonce: str, now: dt.datetime) -> str | None:
        """Mark the link used at ``now``; its admin, or None if unknown, used
        or expired."""
        stmt = (
            update(ConsoleLink)
            .where(
                ConsoleLink.nonce == nonce,
                ConsoleLink.used_at.is_(None),
                ConsoleLink.expires_at > now,
            )
            .values(used_at=now)
            .returning(ConsoleLink.admin)
        )
        return self._execute(stmt, {}).scalar_one_or_none()


class ConsoleRepository(_Repository):
    #: Pending reservations: how many, and when the next one lapses.
    CONSOLE_PENDING = text(
        "SELECT count(*), min(expires_at) FROM orders"
        f" WHERE status = {sql_string(ORDER_STATUS_PENDING)}"
    )

    def pending(self) -> tuple[int, dt.datetime | None]:
        count, next_expiry = self._execute(self.CONSOLE_PENDING, {}).one()
        return count, next_expiry

    # The server this session reached, its role, and its standbys (pg_stat_replication
    # shows its rows to a superuser or a member of pg_monitor / pg_read_all_stats).
    CONSOLE_DATABASE = text(
        "SELECT coalesce(host(inet_server_addr()), 'socket') || ':' || current_setting('port')"
        " AS server,"
        " NOT pg_is_in_recovery() AS primary,"
        " (SELECT count(*) FROM pg_stat_replication) AS standbys,"
        " (SELECT count(*) FROM pg_stat_replication"
        "  WHERE sync_state IN ('sync', 'quorum') AND state = 'streaming') AS synchronous"
    )

    def database(self) -> DatabaseStateRow:
        row = self._execute(self.CONSOLE_DATABASE, {}).one()
        return DatabaseStateRow(row.server, row.primary, row.standbys, row.synchronous)
