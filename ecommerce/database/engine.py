"""Engine, session factory and declarative base.

How a connection is made and checked lives in ecommerce/database/failover.py; the
SQLSTATEs the shop acts on in ecommerce/database/sqlstates.py.

There is exactly one engine per process, created lazily on first use. Under
gunicorn that is inside the worker, after the fork, so no connection is ever
shared between processes; if a process forks after creating it anyway, the
child notices the new pid and builds its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, MetaData, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from ecommerce.config import Settings
from ecommerce.database import cooperative
from ecommerce.database.failover import (
    connect,
    host_found_dead,
    resolve_database_url,
    standby_is_a_disconnect,
)
from ecommerce.observability import metrics

# Deterministic constraint names keep Alembic migrations and the models in step.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: ``record.info`` key: the connection was made since the record's last checkout.
_JUST_CONNECTED = "ecommerce.just_connected"


class _OlderGeneration(sa_exc.DisconnectionError):
    """A pooled connection refused at checkout (see Database._refuse_older_generation)."""


class Database:
    """The shop's database: one engine per process (made on first use, after a
    fork), and the sessions its transactions run in. ``session_factory``, when
    given, makes every session instead (a test binds them all to its own
    connection, whose transaction it rolls back)."""

    def __init__(
        self, settings: Settings, session_factory: Callable[[], Session] | None = None
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self._url: str | None = None
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._lock = threading.Lock()
        self._sessions = sessionmaker(expire_on_commit=False)
        self._owned = threading.local()  # greenlet-local in a gevent worker
        # Bumped whenever a connection is found dead or the pool is forgotten:
        # a connection kept by a thread (own_connection) older than it is
        # replaced before its next use, like the pool's own.
        self._generation = 0
        # The pool's records handed out and counted in the in-use gauge.
        self._counted: set[int] = set()

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = resolve_database_url(self.settings)
        return self._url

    @property
    def engine(self) -> Engine:
        pid = os.getpid()
        if self._engine is not None and self._engine_pid == pid:
            return self._engine
        with self._lock:
            if self._engine is not None and self._engine_pid != pid:
                # Inherited through fork: forget the parent's connections without
                # closing them (they still belong to the parent).
                self._engine.dispose(close=False)
                self._engine = None
            if self._engine is None:
                # Published last: a thread that finds _engine set without the lock
                # must find it complete.
                engine = self._create_engine()
                self._engine_pid = pid
                self._engine = engine
        return self._engine

    def _create_engine(self) -> Engine:
        s = self.settings
        if not cooperative.installed():  # a gunicorn worker installed its own
            cooperative.install(s.db_connect_timeout_ms / 1000, s.db_silence_timeout_s)
        # No session state on a connection (no startup ``options``, no SET
        # SESSION): the timeouts are SET LOCAL in each transaction
        # (services/transactions.py, UnitOfWork), so the shop runs unchanged behind a
        # transaction-pooling PgBouncer, which refuses startup options.
        engine = create_engine(
            self.url,
            pool_size=s.pool_size,
            max_overflow=s.pool_max_overflow,
            pool_timeout=s.pool_timeout_s,
            # No ping before each use (a round trip per transaction): a connection
            # found dead re-runs its transaction once (services/transactions.py).
            pool_pre_ping=False,
            # Connecting and every answer are bounded on this side by the wait
            # callback (ecommerce/database/cooperative.py). TCP keepalives and
            # tcp_user_timeout also drop a connection whose peer went away (a
            # host down, a cut network path) while it sits in the pool.
            connect_args={
                "application_name": "ecommerce",
                "connect_timeout": max(1, round(s.db_connect_timeout_ms / 1000)),
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
                "tcp_user_timeout": int(s.db_silence_timeout_s * 1000),
            },
        )
        event.listen(engine, "do_connect", connect)
        event.listen(engine, "handle_error", standby_is_a_disconnect)
        event.listen(engine.pool, "invalidate", self._connection_found_dead)
        event.listen(engine.pool, "connect", self._stamp_generation)
        event.listen(engine.pool, "checkout", self._refuse_older_generation)
        # Counted once the checkout is through, and a checkin only for a record
        # that was counted: a refused checkout is not given back (its slot
        # reconnects within the same checkout), and one whose reconnect fails is
        # checked in by SQLAlchemy without ever having been handed out.
        self._counted = set()  # a new pool (a forked child's, say): nothing handed out yet
        event.listen(engine.pool, "checkout", self._count_checkout)
        event.listen(engine.pool, "checkin", self._count_checkin)
        return engine

    def session(self) -> Session:
        if self.session_factory is not None:
            return self.session_factory()
        if getattr(self._owned, "active", False):
            return self._sessions(bind=self._owned_connection())
        # Bound explicitly, per session: no shared factory state for threads to race on.
        return self._sessions(bind=self.engine)

    @contextmanager
    def own_connection(self) -> Iterator[None]:
        """Within the block, every session this thread makes uses one pooled
        connection kept for the thread: checked out by its first session, kept
        between them, given back at the end. A combining thread uses it so that
        a batch never waits for the pool behind request threads (the pool's
        size counts one connection per combiner). A connection found dead is
        replaced on its next use (SQLAlchemy reconnects an invalidated one)."""
        self._owned.active = True
        self._owned.connection = None
        try:
            yield
        finally:
            connection: Connection | None = self._owned.connection
            self._owned.active = False
            self._owned.connection = None
            if connection is not None:
                connection.close()

    def _owned_connection(self) -> Connection:
        connection: Connection | None = self._owned.connection
        stale = connection is not None and self._owned.generation != self._generation
        if stale:
            # Made before a connection was found dead (a failover, a restart): it
            # may reach the old primary, now a standby; give it up (not a new
            # death: the others are not told again).
            self._owned.replacing = True
            try:
                with contextlib.suppress(Exception):
                    connection.invalidate()  # type: ignore[union-attr]
                with contextlib.suppress(Exception):
                    connection.close()  # type: ignore[union-attr]
            finally:
                self._owned.replacing = False
        if stale or connection is None or connection.closed or self._owned.pid != os.getpid():
            self._owned.generation = self._generation
            connection = self.engine.connect()
            self._owned.connection = connection
            self._owned.pid = os.getpid()
        return connection

    def _count_checkout(self, _dbapi_connection, record, _proxy) -> None:
        self._counted.add(id(record))
        metrics.pool_checked_out(1)

    def _count_checkin(self, _dbapi_connection, record) -> None:
        if id(record) in self._counted:
            self._counted.discard(id(record))
            metrics.pool_checked_out(-1)

    def _next_generation(self) -> None:
        self._generation += 1

    def _connection_found_dead(self, _dbapi_connection, record, error=None) -> None:
        if getattr(self._owned, "replacing", False) or isinstance(error, _OlderGeneration):
            return  # a replacement, not a new death: the others are not told again
        host_found_dead(record.info)
        self._next_generation()

    def _stamp_generation(self, _dbapi_connection, record) -> None:
        record.info["generation"] = self._generation
        record.info[_JUST_CONNECTED] = True

    def _refuse_older_generation(self, _dbapi_connection, record, _proxy) -> None:
        """A pooled connection made before a connection was found dead (or the
        pool was told to forget) is replaced as it is checked out: the pool
        reconnects that slot, so its size still bounds the connections.

        A connection made by this very checkout (a new slot, or the one that
        replaces a refused connection) is taken whatever happened meanwhile:
        it was made after the death that refused its predecessor and checked
        writable. Refusing it too when another request found a connection dead
        during the reconnect (a failover does that many times over) ran out
        SQLAlchemy's two reconnect tries: the checkout failed with a non-database
        error (a 500), and its last invalidate counted as one more death."""
        if record.info.pop(_JUST_CONNECTED, False):
            return
        if record.info.get("generation", self._generation) != self._generation:
            raise _OlderGeneration("made before the last connection found dead")

    def forget_connections(self) -> None:
        """Every connection made so far is replaced at its next use, pooled or
        kept by a thread: for when the server they reach is no longer the one to
        use (it became a standby)."""
        self._next_generation()

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None and self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None
            self._engine_pid = None
