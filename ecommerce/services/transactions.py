"""Running one use case as one database transaction, with bounded waits and retries.

Every service calls :func:`run_in_transaction`. It

* opens the transaction (``with session.begin()``) and sets ``lock_timeout``,
  ``statement_timeout`` and ``idle_in_transaction_session_timeout`` for it with
  SET LOCAL, sent in the same round trip as the transaction's first statement,
  so a request waits for a hot row at most ``lock_timeout``, never hangs a
  worker, and a client that stalls mid-transaction loses its locks; being per
  transaction, the bounds hold behind a transaction-pooling proxy too;
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
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ecommerce import metrics
from ecommerce.cooperative import DatabaseSilent
from ecommerce.db import PENDING_SQL_KEY
from ecommerce.errors import Conflict, InvalidRequest, ServiceBusy
from ecommerce.failover import CommitNotReplicated
from ecommerce.sqlstates import (
    DEADLOCK_DETECTED,
    LOCK_NOT_AVAILABLE,
    RETRYABLE_SQLSTATES,
    TIMEOUT_SQLSTATES,
    is_unavailable,
    sqlstate,
)

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
    standby only in a WARNING (ecommerce/failover.py, commit_checked), which a
    role, a database or a session's PGOPTIONS set to ``error`` would silence:
    the order then answered 201 though a failover could lose it. It is still
    in force while COMMIT waits for the standby (a transaction's settings are
    undone after its commit record is flushed and replicated)."""
    return (
        f"SELECT set_config('lock_timeout', '{int(policy.lock_timeout_ms)}ms', true),"
        f" set_config('statement_timeout', '{int(policy.statement_timeout_ms)}ms', true),"
        " set_config('idle_in_transaction_session_timeout',"
        f" '{int(policy.idle_in_transaction_timeout_ms)}ms', true),"
        " set_config('client_min_messages', 'warning', true);\n"
    )


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
) -> T:
    attempt = 0
    reconnected = False
    timeouts = set_local_timeouts_sql(policy)
    while True:
        committing = False
        checked_out = False
        try:
            # A new session each attempt; one that met a dead connection is closed
            # with it, forgetting the connection and its transaction.
            with sessions() as session, session.begin():
                # SET LOCAL rides along with the transaction's first statement
                # (ecommerce/db.py): the bounds hold for this transaction only,
                # also behind a transaction-pooling proxy, at no extra round trip.
                # (The dict itself: a dead connection refuses even to show its .info.)
                info = session.connection().info
                checked_out = True
                info[PENDING_SQL_KEY] = timeouts
                try:
                    result = work(session)
                finally:
                    info.pop(PENDING_SQL_KEY, None)
                committing = True
            return result
        except Unchanged as unchanged:
            return unchanged.result  # type: ignore[return-value]
        except sa_exc.DBAPIError as error:
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
