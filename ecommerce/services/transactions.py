"""Running one use case as one database transaction, with bounded waits and retries.

Every service calls :func:`run_in_transaction`. It

* runs the use case in a :class:`UnitOfWork`, which begins the transaction with
  its bounds (``lock_timeout``, ``statement_timeout``,
  ``idle_in_transaction_session_timeout``, set for this transaction only) and
  commits it with a check of what COMMIT said; both are read here, in this
  module, not in hooks on the engine;
* runs the unit of work once more if its pooled connection turns out to be
  dead before COMMIT (connections are not pinged before use);
* re-runs the whole unit of work after a deadlock (40P01) or a serialization
  failure (40001), a bounded number of times with jittered backoff, sleeping
  only after the rollback so no lock is held while waiting;
* turns running out of time (lock, statement, pool), a lost database
  connection and a pool that could not hand out a connection into
  :class:`ServiceBusy` (503 with Retry-After).

A connection lost mid-transaction is not retried here: if it dropped during
COMMIT the outcome is unknown and only an idempotency key can make a retry safe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn, TypeVar

import psycopg2
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ecommerce.database.cooperative import DatabaseSilent
from ecommerce.database.failover import CommitNotReplicated
from ecommerce.database.sqlstates import (
    DEADLOCK_DETECTED,
    LOCK_NOT_AVAILABLE,
    RETRYABLE_SQLSTATES,
    TIMEOUT_SQLSTATES,
    is_unavailable,
    sqlstate,
)
from ecommerce.errors import Conflict, InvalidRequest, ServiceBusy
from ecommerce.observability import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


def set_local_timeouts_sql(policy: TransactionPolicy) -> str:
    """SET LOCAL lock_timeout, statement_timeout and idle_in_transaction_session_timeout,
    the policy's values inlined (they are integers), and client_min_messages =
    warning; the pgbench ceiling sends it too. Per transaction, never per
    connection: a transaction-pooling proxy (PgBouncer) hands a server
    connection to whichever client runs a transaction next, so nothing may live
    on the session.

    client_min_messages: COMMIT tells of a cancelled wait for the synchronous
    standby only in a WARNING (:meth:`UnitOfWork.commit`), which a role, a
    database or a session's PGOPTIONS set to ``error`` would silence: the order
    then answered 201 though a failover could lose it. It is still in force
    while COMMIT waits for the standby (a transaction's settings are undone
    after its commit record is flushed and replicated)."""
    return (
        f"SELECT set_config('lock_timeout', '{int(policy.lock_timeout_ms)}ms', true),"
        f" set_config('statement_timeout', '{int(policy.statement_timeout_ms)}ms', true),"
        " set_config('idle_in_transaction_session_timeout',"
        f" '{int(policy.idle_in_transaction_timeout_ms)}ms', true),"
        " set_config('client_min_messages', 'warning', true)"
    )


_ISOLATION_LEVELS = {
    psycopg2.extensions.ISOLATION_LEVEL_READ_UNCOMMITTED: "READ UNCOMMITTED",
    psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED: "READ COMMITTED",
    psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ: "REPEATABLE READ",
    psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE: "SERIALIZABLE",
}


def _begin_sql(raw: psycopg2.extensions.connection) -> str:
    """The BEGIN psycopg2 itself would send for this connection: its isolation
    level, read-only and deferrable characteristics (SQLAlchemy's
    ``isolation_level`` execution option sets them), if any."""
    sql = "BEGIN"
    level = _ISOLATION_LEVELS.get(raw.isolation_level)  # type: ignore[arg-type]
    if level is not None:
        sql += f" ISOLATION LEVEL {level}"
    if raw.readonly is not None:
        sql += " READ ONLY" if raw.readonly else " READ WRITE"
    if raw.deferrable is not None:
        sql += " DEFERRABLE" if raw.deferrable else " NOT DEFERRABLE"
    return sql


class UnitOfWork:
    """One transaction of one use case, begun and ended here in plain sight.

    ``with UnitOfWork(session, policy) as unit: ...; unit.commit()``:

    * **begin** (entering): checks a connection out of the pool and sends
      ``BEGIN; SELECT set_config(...)`` (:func:`set_local_timeouts_sql`) in one
      round trip, the one psycopg2 would have spent on a BEGIN of its own (with
      the connection's isolation level, as psycopg2's would have). The
      connection is in psycopg2's autocommit mode until the transaction has
      ended, so psycopg2 sends no BEGIN and no COMMIT behind this class's back:
      the transaction is exactly what this class sends (a unit of work is a
      transaction even on a connection set to autocommit).
    * **commit**: flushes the session, tells ``before_commit`` (a test holds a
      transaction there, its locks held), sends COMMIT, and looks at the
      notices COMMIT brought. A cancelled wait for the synchronous standby
      comes only as a WARNING (COMMIT still succeeds); any warning there raises
      :class:`CommitNotReplicated`, a 503 that the Idempotency-Key settles,
      never a 201 that a failover can lose. Any warning counts, not only one
      whose text reads "canceling wait for synchronous replication": the text
      is in the server's lc_messages language (which only a superuser may
      change), and its SQLSTATE is the generic 01000 that psycopg2 does not
      pass on anyway. Nothing else the shop commits warns (no trigger raises
      one).
    * **rollback** (leaving without a commit: an error, :class:`Unchanged`, a
      COMMIT that failed): sends ROLLBACK. A connection whose transaction could
      not be seen to end is invalidated: never given back to the pool inside a
      transaction. psycopg2's own mode is given back before the session lets
      the connection go.

    A session that joins a transaction already open on its connection (a
    test's, rolled back at its end: tests/helpers.py, ``sessions_bound_to``,
    where each session is a savepoint) sends its bounds as a statement of
    their own and leaves BEGIN and COMMIT to SQLAlchemy.

    BEGIN, COMMIT and ROLLBACK go straight to the DBAPI cursor (a statement
    through SQLAlchemy's execution costs tens of microseconds a time, twice a
    transaction). Their errors are raised as SQLAlchemy raises a DBAPI error
    (``.orig``, the SQLSTATE, ``connection_invalidated``) and a connection
    they find dead is invalidated, so :func:`run_in_transaction` retries and
    answers them alike; the engine's ``handle_error`` listeners do not see
    them (none applies: a standby refuses writes before COMMIT)."""

    def __init__(
        self,
        session: Session,
        policy: TransactionPolicy,
        before_commit: Callable[[Session], None] | None = None,
    ) -> None:
        self.session = session
        self._bounds = set_local_timeouts_sql(policy)
        self._before_commit = before_commit
        self._connection: Connection | None = None
        self._raw: psycopg2.extensions.connection | None = None
        self._open = False
        self._autocommit = False
        self._dbapi_cursor: psycopg2.extensions.cursor | None = None
        #: COMMIT was sent: from here on a lost connection leaves the outcome unknown.
        self.committing = False

    def __enter__(self) -> UnitOfWork:
        bind = self.session.bind
        joined = isinstance(bind, Connection) and bind.in_transaction()
        self.session.begin()
        connection = self.session.connection()  # the pool's checkout
        self._connection = connection
        if joined:
            connection.exec_driver_sql(self._bounds)
            return self
        raw: psycopg2.extensions.connection = connection.connection.dbapi_connection  # type: ignore[assignment]
        self._raw = raw
        try:
            try:
                begin = _begin_sql(raw)
                self._autocommit = raw.autocommit
                raw.autocommit = True
            except psycopg2.Error as error:  # a connection closed under us, say
                self._fail("BEGIN", error, dead=connection.dialect.is_disconnect(error, raw, None))
            self._open = True
            self._send(f"{begin}; {self._bounds}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def commit(self) -> None:
        """Flush, COMMIT, and refuse to report a commit a failover could lose."""
        self.session.flush()
        if self._before_commit is not None:
            self._before_commit(self.session)
            self.session.flush()  # whatever it changed, before the COMMIT
        if self._raw is not None:
            notices = self._raw.notices
            del notices[:]
            self.committing = True
            self._send("COMMIT")  # failed: still open, rolled back on leaving
            self._open = False
            self._give_back_the_mode()
            if notices:
                said = notices[-1].strip().replace("\n", " ")
                del notices[:]
                self._fail(
                    "COMMIT",
                    CommitNotReplicated(
                        f"the commit may not have reached the synchronous standby yet ({said})"
                    ),
                    dead=False,
                )
        else:
            self.committing = True  # the savepoint's release, SQLAlchemy's
        self.session.commit()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._open:
                self._open = False
                self._end_or_invalidate()
        finally:
            self._give_back_the_mode()
            if self.session.in_transaction():
                self.session.rollback()

    def _end_or_invalidate(self) -> None:
        """ROLLBACK; a connection that cannot be seen out of its transaction
        (the ROLLBACK failed, or was interrupted) is invalidated. An interrupt
        (a gevent timeout, a kill) is raised on; any other error is not: the
        one that got us here is."""
        raw = self._raw
        assert raw is not None
        try:
            self._cursor().execute("ROLLBACK")
            if raw.info.transaction_status == TRANSACTION_STATUS_IDLE:
                return
        except Exception:  # the error that got us here is raised
            pass
        except BaseException:
            self._invalidate()
            raise
        self._invalidate()

    def _give_back_the_mode(self) -> None:
        """psycopg2's autocommit as it was, before the pool takes the connection
        back (another thread may check it out at once)."""
        raw = self._raw
        if raw is None or raw.closed or raw.autocommit == self._autocommit:
            return
        try:
            raw.autocommit = self._autocommit
        except psycopg2.Error:
            self._invalidate()

    def _cursor(self) -> psycopg2.extensions.cursor:
        """One DBAPI cursor for BEGIN, COMMIT and ROLLBACK (closed with the connection)."""
        if self._dbapi_cursor is None:
            assert self._raw is not None
            self._dbapi_cursor = self._raw.cursor()
        return self._dbapi_cursor

    def _invalidate(self, error: BaseException | None = None) -> None:
        connection = self._connection
        if connection is not None and not connection.invalidated:
            connection.invalidate(error)

    def _send(self, sql: str) -> None:
        raw = self._raw
        assert raw is not None
        try:
            self._cursor().execute(sql)
        except psycopg2.Error as error:
            dead = self._connection is not None and self._connection.dialect.is_disconnect(
                error, raw, None
            )
            self._fail(sql, error, dead=dead)

    def _fail(self, sql: str, error: psycopg2.Error, *, dead: bool) -> NoReturn:
        """Raise ``error`` as SQLAlchemy raises a DBAPI error (``.orig``, the
        SQLSTATE, ``connection_invalidated``), invalidating a dead connection."""
        connection = self._connection
        assert connection is not None
        if dead:
            self._invalidate(error)
        raise sa_exc.DBAPIError.instance(
            sql,
            None,
            error,
            psycopg2.Error,
            hide_parameters=True,
            dialect=connection.dialect,
            connection_invalidated=dead,
        ) from error


class Unchanged(Exception):
    """Raised by a unit of work that wrote nothing, with its result: the
    transaction is rolled back instead of committed (a COMMIT of a transaction
    that only locked rows still writes a commit record, flushes it and waits for
    the synchronous standby, with its locks held) and the result returned."""

    def __init__(self, result: object) -> None:
        super().__init__("nothing was written")
        self.result = result


@dataclass(frozen=True)
class TransactionPolicy:
    lock_timeout_ms: int = 3000
    statement_timeout_ms: int = 10000
    idle_in_transaction_timeout_ms: int = 15000
    retries: int = 3
    retry_after_s: int = 1
    backoff_base_s: float = 0.01
    backoff_cap_s: float = 0.2


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, sa_exc.DBAPIError) and sqlstate(error) in RETRYABLE_SQLSTATES


def backoff_delay(attempt: int, policy: TransactionPolicy) -> float:
    """Full jitter: a random wait in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(policy.backoff_cap_s, policy.backoff_base_s * 2**attempt))


def run_in_transaction(
    sessions: Callable[[], Session],
    work: Callable[[Session], T],
    policy: TransactionPolicy,
    *,
    name: str = "transaction",
    before_commit: Callable[[Session], None] | None = None,
) -> T:
    attempt = 0
    reconnected = False
    while True:
        unit: UnitOfWork | None = None
        checked_out = False
        try:
            # A new session each attempt; one that met a dead connection is closed
            # with it, forgetting the connection and its transaction.
            with sessions() as session, UnitOfWork(session, policy, before_commit) as unit:
                checked_out = True
                result = work(session)
                unit.commit()
            return result
        except Unchanged as unchanged:
            return unchanged.result  # type: ignore[return-value]
        except sa_exc.DBAPIError as error:
            committing = unit is not None and unit.committing
            code = sqlstate(error)
            silent = isinstance(error.orig, DatabaseSilent)
            if isinstance(error.orig, CommitNotReplicated):
                # Committed here, perhaps not on the standby a failover promotes:
                # never acknowledged. The same Idempotency-Key settles it.
                metrics.count_timeout("replication")
                log.warning("%s: %s", name, error.orig)
                raise ServiceBusy(
                    "the outcome is not known yet: retry with the same Idempotency-Key",
                    retry_after_s=policy.retry_after_s,
                ) from error
            if error.connection_invalidated and not committing and not reconnected and not silent:
                # A pooled connection that died (the database restarted): nothing of
                # this transaction can have committed, so run it once more on a
                # fresh connection. Connections are not pinged before use.
                reconnected = True
                metrics.count_retry("reconnect")
                log.info("%s: connection lost before commit, running again", name)
                continue
            if is_retryable(error) and attempt < policy.retries:
                delay = backoff_delay(attempt, policy)
                attempt += 1
                metrics.count_retry("deadlock" if code == DEADLOCK_DETECTED else "serialization")
                log.info("%s: %s, retry %d after %.3fs", name, code, attempt, delay)
                time.sleep(delay)
                continue
            if is_retryable(error) or code in TIMEOUT_SQLSTATES:
                if code in TIMEOUT_SQLSTATES:
                    metrics.count_timeout("lock" if code == LOCK_NOT_AVAILABLE else "statement")
                raise ServiceBusy(
                    "the shop is busy, please retry", retry_after_s=policy.retry_after_s
                ) from error
            if isinstance(error, sa_exc.IntegrityError):
                log.warning("%s: integrity error %s: %s", name, code, error.orig)
                raise Conflict("the request conflicts with the current state") from error
            if isinstance(error, sa_exc.DataError):
                log.warning("%s: data error %s: %s", name, code, error.orig)
                raise InvalidRequest("a value is out of range") from error
            if is_unavailable(error):
                log.warning("%s: database unavailable: %s", name, error.orig)
                raise ServiceBusy(
                    "the database is unavailable, please retry",
                    retry_after_s=policy.retry_after_s,
                ) from error
            raise
        except sa_exc.InvalidRequestError as error:
            if checked_out:
                raise  # a mistake of the code, not of the database
            # The pool could not hand out a connection: its checkout listeners
            # refused each connection it tried (SQLAlchemy gives up after two
            # reconnects with "This connection is closed", not a database error).
            log.warning("%s: no connection from the pool: %s", name, error)
            raise ServiceBusy(
                "the database is unavailable, please retry", retry_after_s=policy.retry_after_s
            ) from error
        except sa_exc.TimeoutError as error:  # no pooled connection in time
            metrics.count_timeout("pool")
            raise ServiceBusy(
                "the shop is busy, please retry", retry_after_s=policy.retry_after_s
            ) from error
