"""How a connection reaches the primary, and how a commit that a failover could
lose is told apart (docs/DESIGN.md, "A primary that fails").

* :func:`normalize_database_url` accepts libpq's multi-host URL
  (``postgresql://h1:5432,h2:5432/shop?target_session_attrs=read-write``);
* :func:`connect` (SQLAlchemy's do_connect) tries the hosts one at a time, each
  within DB_CONNECT_TIMEOUT_MS, the last good one first, and checks that the
  server takes writes itself (PgBouncer replays a stale ``in_hot_standby``);
* :class:`CommitNotReplicated` is a COMMIT whose wait for the synchronous
  standby was cancelled (raised by services/transactions.py, UnitOfWork.commit:
  a 503, never a 201);
* :func:`standby_is_a_disconnect` makes a pooled connection to a server that
  became a standby count as dead, so the pool reconnects to the primary.
"""

from __future__ import annotations

import contextlib

import psycopg2
from sqlalchemy import make_url

from ecommerce.config import Settings
from ecommerce.database import cooperative
from ecommerce.database.sqlstates import READ_ONLY_SQL_TRANSACTION, sqlstate


class CommitNotReplicated(psycopg2.OperationalError):
    """COMMIT returned, but its wait for the synchronous standby was cancelled
    (pg_cancel_backend: an operator, a tool; statement_timeout does not cut that
    wait): the transaction is visible on this server and
    may be missing on the standby that a failover promotes. Its outcome is
    unknown to the client until the standby has it."""


def standby_is_a_disconnect(context) -> None:
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
    connection, index = _connect_host_by_host(dialect, cargs, cparams, hosts)
    conn_rec.info[HOST_KEY] = (_host_list(cparams, hosts), index)
    return connection


def _host_list(cparams, hosts: list[str]) -> str:
    """The host list as ``host:port`` entries: what the shop remembers a list by
    (two lists that name the same hosts on other ports are other servers)."""
    ports = str(cparams.get("port") or "").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    return ",".join(f"{host}:{port}" for host, port in zip(hosts, ports, strict=False))


#: Per host list (``host:port,...``), the index of the host that last took a connection.
_last_good: dict[str, int] = {}

#: ``record.info`` key: (host list, index) of the host a pooled connection reached.
HOST_KEY = "ecommerce.host"


def host_found_dead(record_info) -> None:
    """A connection to this host was found dead (a silent server, a reset): the
    next connection tries the other hosts first. Else, after a frozen primary
    (which takes the TCP connection and never answers), every connection made
    once its connections were found dead first waited its whole connect bound
    there, the host that answered last. A host that is only restarting costs
    the others one quick refusal (a standby says read-only at once)."""
    listed, index = record_info.get(HOST_KEY, (None, None))
    if listed is None or _last_good.get(listed, 0) != index:
        return
    _last_good[listed] = (index + 1) % len(listed.split(","))


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
    listed = _host_list(cparams, hosts)
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
        return connection, index
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
    from ecommerce.database.embedded import embedded_database_url

    return embedded_database_url(settings.instance_path)
