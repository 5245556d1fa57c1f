"""The database one network hop away (``flask flashsale --db-hop-us``).

This machine's kernel has no delaying queueing discipline (``netem``), so the
hop is a relay on the loopback (``relay.c``, built with the machine's C
compiler): the server under test (the shop's gunicorn or the Go design) talks
to PostgreSQL through it, and every byte, each way, arrives half the round
trip later. The simulator's own connections (setting up, checking the books)
go straight to the database. The relay's CPU is measured apart from the
server's, and the round trip it adds is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

SOURCE = Path(__file__).with_name("relay.c")


def build(out_dir: Path) -> Path | str:
    """The relay built into ``out_dir``, or why it could not be."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "no C compiler to build the relay (apt-get install gcc)"
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "db-hop-relay"
    done = subprocess.run(
        [compiler, "-O2", "-pthread", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"the relay did not build: {lines[-1] if lines else done.returncode}"
    return binary


def target_of(database_url: str) -> str:
    """Where the relay connects: ``host:port``, or the server's Unix socket (a
    ``host`` query parameter naming a directory, as the embedded database's)."""
    url = make_url(database_url)
    port = url.port or 5432
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return f"{socket_dir}/.s.PGSQL.{port}"
    if url.host is None or url.host.startswith("/"):
        return f"{url.host or '/var/run/postgresql'}/.s.PGSQL.{port}"
    return f"{url.host}:{port}"


class Hop:
    """The relay running: ``url`` is ``database_url`` through it, about
    ``round_trip_us`` further away than straight (the relay's own passing on
    costs some of it: measured first and taken off its delay); ``added_us``
    is the round trip it adds, as measured once it runs."""

    def __init__(self, binary: Path, database_url: str, round_trip_us: int) -> None:
        self.binary = binary
        self.database_url = database_url
        self.round_trip_us = round_trip_us
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.added_us = 0.0

    def __enter__(self) -> Hop:
        try:
            self._start(0)
            overhead = self._added()
            self._stop()
            self._start(max(0, round(self.round_trip_us - overhead)) // 2)
            self.added_us = self._added()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _start(self, one_way_us: int) -> None:
        self.process = subprocess.Popen(
            [str(self.binary), str(one_way_us), target_of(self.database_url)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the relay did not start ({line.strip() or 'no port'})")
        url = make_url(self.database_url)
        query = {k: v for k, v in url.query.items() if k != "host"}
        hopped = url.set(host="127.0.0.1", port=int(line), query=query)
        self.url = hopped.render_as_string(hide_password=False)

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _added(self, samples: int = 300) -> float:
        """The round trip the relay adds now: the median of ``SELECT 1``
        through it less the median straight to the database (µs)."""
        return _median_round_trip_us(self.url, samples) - _median_round_trip_us(
            self.database_url, samples
        )


@contextlib.contextmanager
def around(binary: str | None, database_url: str, round_trip_us: int) -> Iterator[Hop | None]:
    """The hop running for one sale (None: no hop asked, ``round_trip_us`` 0)."""
    if not round_trip_us:
        yield None
        return
    assert binary is not None, "the relay is built before the sale (build())"
    with Hop(Path(binary), database_url, round_trip_us) as hop:
        print(
            f"  the database one hop away: {hop.added_us:,.0f} us added to a round trip",
            file=sys.stderr,
            flush=True,
        )
        yield hop


def _median_round_trip_us(url: str, samples: int) -> float:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            took = []
            for _ in range(samples):
                began = time.perf_counter()
                conn.exec_driver_sql("SELECT 1").scalar_one()
                took.append((time.perf_counter() - began) * 1e6)
            conn.rollback()
        return statistics.median(took)
    finally:
        engine.dispose()
