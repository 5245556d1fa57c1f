"""Engine, session factory and declarative base.

There is exactly one engine per process, created lazily on first use. Under
gunicorn that is inside the worker, after the fork, so no connection is ever
shared between processes; if a process forks after creating it anyway, the
child notices the new pid and builds its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from ecommerce import cooperative, metrics
from ecommerce.config import Settings

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


# SQLSTATEs the code acts on (PostgreSQL, Appendix A).
FOREIGN_KEY_VIOLATION = "23503"
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


#: ``connection.info`` key of SQL to send in front of the connection's next
#: statement, in the same round trip (psycopg2 sends a query string with several
#: statements as one message, and returns the last statement's result).
PENDING_SQL_KEY = "ecommerce.pending_sql"


def _send_pending_sql_first(conn, cursor, statement, parameters, context, executemany):
    pending = conn.info.pop(PENDING_SQL_KEY, None)
    if pending is None:
        return statement, parameters
    if executemany:  # one statement per parameter set: send it on its own
        cursor.execute(pending)
        return statement, parameters
    return pending + statement, parameters


class _OlderGeneration(sa_exc.DisconnectionError):
    """A pooled connection refused at checkout (see Database._refuse_older_generation)."""


class CommitNotReplicated(psycopg2.OperationalError):
    """COMMIT returned, but its wait for the synchronous standby was cancelled
    (pg_cancel_backend: an operator, a tool; statement_timeout does not cut that
    wait): the transaction is visible on this server and
    may be missing on the standby that a failover promotes. Its outcome is
    unknown to the client until the standby has it."""


#: What PostgreSQL says when a commit's wait for the synchronous standby ends early.
_SYNC_WAIT_CANCELLED = "canceling wait for synchronous replication"


def _commit_checked(real_commit):
    """The dialect's COMMIT, then a look at the notices it brought: a cancelled
    wait for the synchronous standby (a WARNING, COMMIT still succeeds) raises
    :class:`CommitNotReplicated` instead of reporting a commit a failover can lose."""

    def do_commit(dbapi_connection) -> None:
        notices = dbapi_connection.notices
        del notices[:]
        real_commit(dbapi_connection)
        if any(_SYNC_WAIT_CANCELLED in notice for notice in notices):
            del notices[:]
            raise CommitNotReplicated("the commit may not have reached the synchronous standby yet")

    return do_commit


def _standby_is_a_disconnect(context) -> None:
    """A pooled connection whose server is now a standby is as good as dead: the
    pool drops it (and every connection made before it) and the next connection
    goes to the primary (target_session_attrs=read-write)."""
    if sqlstate(context.original_exception) == READ_ONLY_SQL_TRANSACTION:
        context.is_disconnect = True


def connect(dialect, conn_rec, cargs, cparams):
    """How every connection is made (SQLAlchemy's do_connect): host names looked up
    cooperatively in a gevent worker, and a multi-host URL (or one that asks for
    target_session_attrs=read-write) tried host by host, each host within its
    own connect bound, the host that answered last first."""
    hosts = str(cparams.get("host") or "").split(",")
    if len(hosts) < 2 and cparams.get("target_session_attrs") != "read-write":
        _resolve_host_names_cooperatively(cparams)
        return None
    return _connect_host_by_host(dialect, cargs, cparams, hosts)


#: Per host list, the index of the host that last took a connection.
_last_good: dict[str, int] = {}


def _connect_host_by_host(dialect, cargs, cparams, hosts: list[str]):
    """libpq tries a host list in order, but in the asynchronous mode of the wait
    callback its connect_timeout does not apply, and this side's bound covers the
    whole list: one frozen host (listed first, say, the old primary) would fail
    every connection. So each host is tried alone, bounded on its own; the first
    that takes the connection wins.

    ``target_session_attrs=read-write`` is checked here with a query, not left
    to libpq: libpq trusts the in_hot_standby status the server reports at
    login, and a pooler in front of the node (PgBouncer) replays the status its
    first server connection reported, so after a failover the new primary's
    pooler still says "standby" and the old primary's may say "primary"."""
    count = len(hosts)
    writable_only = cparams.get("target_session_attrs") == "read-write"

    def each(key: str) -> list[str | None]:
        value = cparams.get(key)
        if value is None or value == "":
            return [None] * count
        values = str(value).split(",")
        return values * count if len(values) == 1 else values

    ports, addresses = each("port"), each("hostaddr")
    listed = ",".join(hosts)
    first = _last_good.get(listed, 0)
    failures: list[tuple[str, psycopg2.Error]] = []
    for index in [first] + [i for i in range(count) if i != first]:
        params = dict(cparams, host=hosts[index])
        params.pop("target_session_attrs", None)
        for key, values in (("port", ports), ("hostaddr", addresses)):
            params.pop(key, None)
            if values[index]:
                params[key] = values[index]
        connection = None
        try:
            # Each host's name looked up on its own: one that no longer resolves
            # fails that host, not the list.
            _resolve_host_names_cooperatively(params)
            connection = dialect.connect(*cargs, **params)
            if writable_only and not _takes_writes(connection):
                raise psycopg2.OperationalError("session is read-only (a standby)")
        except psycopg2.Error as error:
            if connection is not None:
                with contextlib.suppress(psycopg2.Error):
                    connection.close()
            failures.append((hosts[index], error))
            continue
        _last_good[listed] = index
        return connection
    reasons = "; ".join(f"{host}: {str(error).strip()}" for host, error in failures)
    silent = all(isinstance(error, cooperative.DatabaseSilent) for _, error in failures)
    kind = cooperative.DatabaseSilent if silent else psycopg2.OperationalError
    raise kind(f"no host took the connection ({reasons})")


def _takes_writes(connection) -> bool:
    """Asked of the server itself, in a transaction of its own (through a
    transaction pooler, whatever server connection it hands out)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW transaction_read_only")
        (read_only,) = cursor.fetchone()
    connection.rollback()
    return read_only == "off"


def _resolve_host_names_cooperatively(cparams) -> None:
    """In a gevent worker, look host names up through gevent's resolver, bounded,
    and hand libpq the addresses: libpq resolves a name itself, synchronously,
    which would stop every request of the worker while DNS is slow."""
    import socket

    try:
        from gevent import Timeout, monkey
    except ImportError:
        return
    host = cparams.get("host")
    if not host or "hostaddr" in cparams or not monkey.is_module_patched("socket"):
        return
    addresses = []
    for name in str(host).split(","):
        if not name or name.startswith("/") or _is_ip(name):
            addresses.append("")  # a socket path or an address: nothing to look up
            continue
        try:
            with Timeout(cooperative.connect_timeout_s()):
                found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, Timeout) as error:
            raise cooperative.DatabaseSilent(f"could not resolve {name}: {error}") from None
        addresses.append(str(found[0][4][0]))
    if any(addresses):
        cparams["hostaddr"] = ",".join(addresses)


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def normalize_database_url(url: str) -> str:
    """Pin the driver to psycopg2 for plain ``postgresql://`` (or ``postgres://``) URLs,
    and accept libpq's multi-host form.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which this project
    does not install; other drivers named explicitly are left alone. libpq's
    ``postgresql://a:5432,b:5433/db`` (what a failover manager such as
    pg_auto_failover prints) becomes SQLAlchemy's ``?host=a:5432&host=b:5433``.
    """
    parsed = make_url(_hosts_as_query(url))
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg2")
    elif not parsed.drivername.startswith("postgresql"):
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def _hosts_as_query(url: str) -> str:
    """``scheme://[user[:password]@]host1[:port1],host2[:port2]/...`` with its host
    list moved into ``host=`` query parameters; any other URL as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    if "," not in hosts:
        return url
    listed = [host for host in hosts.split(",") if host]
    if not listed:
        raise ValueError("DATABASE_URL lists no host")
    path, _, query = tail.partition("?")
    params = "&".join(f"host={host}" for host in listed)
    query = f"{query}&{params}" if query else params
    return f"{scheme}://{userinfo}{at}{path or '/'}?{query}"


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return normalize_database_url(settings.database_url)
    from ecommerce.embedded_db import embedded_database_url

    return embedded_database_url(settings.instance_path)


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._url: str | None = None
        self._engine: Engine | None = None
        self._engine_pid: int | None = None
        self._lock = threading.Lock()
        self._sessions = sessionmaker(expire_on_commit=False)
        self._override: sessionmaker[Session] | None = None
        self._owned = threading.local()  # greenlet-local in a gevent worker
        # Bumped whenever a connection is found dead or the pool is forgotten:
        # a connection kept by a thread (own_connection) older than it is
        # replaced before its next use, like the pool's own.
        self._generation = 0

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
        # (services/transactions.py), so the shop runs unchanged behind a
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
            # callback (ecommerce/cooperative.py). TCP keepalives and
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
        event.listen(engine.pool, "checkout", lambda *_: metrics.pool_checked_out(1))
        event.listen(engine.pool, "checkin", lambda *_: metrics.pool_checked_out(-1))
        event.listen(engine, "before_cursor_execute", _send_pending_sql_first, retval=True)
        event.listen(engine, "do_connect", connect)
        event.listen(engine, "handle_error", _standby_is_a_disconnect)
        event.listen(engine.pool, "invalidate", self._connection_found_dead)
        event.listen(engine.pool, "connect", self._stamp_generation)
        event.listen(engine.pool, "checkout", self._refuse_older_generation)
        # SQLAlchemy has no event after COMMIT that sees the DBAPI connection.
        engine.dialect.do_commit = _commit_checked(engine.dialect.do_commit)  # type: ignore[method-assign]
        return engine

    def session(self) -> Session:
        if self._override is not None:
            return self._override()
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

    def _next_generation(self) -> None:
        self._generation += 1

    def _connection_found_dead(self, _dbapi_connection, _record, error=None) -> None:
        if getattr(self._owned, "replacing", False) or isinstance(error, _OlderGeneration):
            return  # a replacement, not a new death: the others are not told again
        self._next_generation()

    def _stamp_generation(self, _dbapi_connection, record) -> None:
        record.info["generation"] = self._generation

    def _refuse_older_generation(self, _dbapi_connection, record, _proxy) -> None:
        """A pooled connection made before a connection was found dead (or the
        pool was told to forget) is replaced as it is checked out: the pool
        reconnects that slot, so its size still bounds the connections."""
        if record.info.get("generation", self._generation) != self._generation:
            raise _OlderGeneration("made before the last connection found dead")

    def forget_connections(self) -> None:
        """Every connection made so far is replaced at its next use, pooled or
        kept by a thread: for when the server they reach is no longer the one to
        use (it became a standby)."""
        self._next_generation()

    @contextmanager
    def sessions_bound_to(self, connection: Connection) -> Iterator[None]:
        """Make every session join ``connection``'s transaction (tests roll it back)."""
        self._override = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield
        finally:
            self._override = None

    def dispose(self) -> None:
        with self._lock:
            if self._engine is not None and self._engine_pid == os.getpid():
                self._engine.dispose()
            self._engine = None
            self._engine_pid = None
