"""The SQLSTATEs the shop acts on (PostgreSQL, Appendix A), and how to read them
off an error."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# SQLSTATEs the code acts on (PostgreSQL, Appendix A).
DEADLOCK_DETECTED = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
RETRYABLE_SQLSTATES = frozenset({DEADLOCK_DETECTED, "40001"})  # and serialization_failure
TIMEOUT_SQLSTATES = frozenset({LOCK_NOT_AVAILABLE, "57014"})  # and query_canceled
# A write on a server that is now a standby (a failover behind a pooler).
READ_ONLY_SQL_TRANSACTION = "25006"
# admin_shutdown, crash_shutdown, cannot_connect_now (and the 08 connection_exception
# class); at connect: the database does not exist, the role may not log in; and
# a standby refusing a write.
UNAVAILABLE_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "3D000", "28000", "28P01", READ_ONLY_SQL_TRANSACTION}
)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error (None when the server sent none)."""
    orig = getattr(error, "orig", error)
    return getattr(orig, "pgcode", None)


def is_unavailable(error: sa_exc.DBAPIError) -> bool:
    """The database went away or refuses connections (as opposed to refusing a statement)."""
    code = sqlstate(error)
    if code is None:
        # psycopg2 reports a dropped socket as OperationalError/InterfaceError with no SQLSTATE.
        return error.connection_invalidated or isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return code in UNAVAILABLE_SQLSTATES or code.startswith("08")
