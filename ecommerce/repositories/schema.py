"""The database itself, for health checks: whether it takes writes, and which
Alembic revision it is at."""

from __future__ import annotations

from sqlalchemy import func, select, text

from ecommerce.repositories._base import _Repository


class SchemaRepository(_Repository):
    def takes_writes(self) -> bool:
        """Whether this session may write (False on a standby, or a server set
        read-only)."""
        read_only = self._execute(select(func.current_setting("transaction_read_only")), {})
        return read_only.scalar() == "off"

    def revision(self) -> str | None:
        """The Alembic revision the database is at (None: never migrated)."""
        if self._execute(select(func.to_regclass("public.alembic_version")), {}).scalar() is None:
            return None
        return self._execute(text("SELECT version_num FROM alembic_version"), {}).scalar()

    #: Standbys confirming this primary's commits; NULL when the role may not
    #: see pg_stat_replication in full (its sync_state is hidden without
    #: pg_read_all_stats, which pg_monitor grants), and on a standby.
    SYNCHRONOUS_STANDBYS = text(
        "SELECT CASE WHEN pg_has_role('pg_read_all_stats', 'USAGE')"
        " AND NOT pg_is_in_recovery() THEN"
        " (SELECT count(*) FROM pg_stat_replication"
        "  WHERE sync_state IN ('sync', 'quorum') AND state = 'streaming') END"
    )

    def synchronous_standbys(self) -> int | None:
        return self._execute(self.SYNCHRONOUS_STANDBYS, {}).scalar()
