"""The database one network hop away (``flask flashsale --db-hop-us``).

This machine's kernel has no delaying queueing discipline (``netem``), so the
hop is a relay on the loopback (``relay.c``, built with the machine's C
compiler): the server under test (the shop's gunicorn or the Go design) talks
to PostgreSQL through it, and every byte, each way, arrives half the round
trip later. The simulator's own connections (setting up, checking the books)
go straight to the database. The relay's CPU is measured apart from the
server's, and the round trip it adds is measured, not assumed: idle, once it
runs, and under the storm (:meth:`Hop.probing`).
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.pool import NullPool

from ecommerce.flashsale.server import build_failure

SOURCE = Path(__file__).with_name("relay.c")
#: How often the probe under the storm times a round trip each way.
PROBE_INTERVAL_S = 0.05


def build(out_dir: Path) -> Path | str:
    """The relay built into ``out_dir``, or why it could not be."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "no C compiler to build the relay (apt-get install gcc)"
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "db-hop-relay"
    args = [compiler, "-O2", "-pthread", "-o", str(binary), str(SOURCE)]
    return build_failure(args, "the relay", 120) or binary


def target_of(database_url: str) -> str:
    """Where the relay connects: ``host:port``, or the server's Unix socket.
    The host and port come from the URL or from its ``host`` and ``port`` query
    parameters, which libpq prefers (a ``host`` naming a directory is a socket,
    as the embedded database's). A URL of several hosts is refused: the hop
    stands in front of one server."""
    url = make_url(database_url)
    hosts = url.query.get("host", url.host)
    if isinstance(hosts, tuple) or (isinstance(hosts, str) and "," in hosts):
        raise ValueError("--db-hop-us: the database URL names several hosts; give it one")
    port_param = url.query.get("port")
    if isinstance(port_param, tuple):
        raise ValueError("--db-hop-us: the database URL names several ports; give it one")
    host = hosts or "/var/run/postgresql"
    port = port_param or url.port or 5432
    if not host.startswith("/") and host.count(":") == 1:  # host:port, as the query form allows
        host, port = host.split(":")
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return f"{host}:{port}"


def through(database_url: str, port: int) -> str:
    """``database_url`` pointed at the relay on the loopback ``port``: the
    query parameters that would take libpq elsewhere go (host, hostaddr, port)."""
    url = make_url(database_url)
    query = {k: v for k, v in url.query.items() if k not in ("host", "hostaddr", "port")}
    return url.set(host="127.0.0.1", port=port, query=query).render_as_string(hide_password=False)


class Hop:
    """The relay running: ``url`` is ``database_url`` through it, about
    ``round_trip_us`` further away than straight (the relay's own passing on
    costs some of it: measured first and taken off its delay); ``added_us``
    is the round trip it adds, idle, once it runs; ``relayed`` the connections
    it relayed, known once it stopped."""

    def __init__(self, binary: Path, database_url: str, round_trip_us: int) -> None:
        self.binary = binary
        self.database_url = database_url
        self.round_trip_us = round_trip_us
        self.target = target_of(database_url)
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.added_us = 0.0
        self.added_under_load_us: float | None = None
        self.relayed: int | None = None

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

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """Through the block (the storm), time a ``SELECT 1`` through the relay
        and one straight, in turn, every PROBE_INTERVAL_S; after it,
        ``added_under_load_us`` is the median of through less straight."""
        stop = threading.Event()
        pairs: list[tuple[float, float]] = []

        def probe() -> None:
            hopped, straight = _engine(self.url), _engine(self.database_url)
            try:
                with hopped.connect() as far, straight.connect() as near:
                    while not stop.wait(PROBE_INTERVAL_S):
                        pairs.append((_round_trip_us(far), _round_trip_us(near)))
            finally:
                hopped.dispose()
                straight.dispose()

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(30)
        if pairs:
            self.added_under_load_us = statistics.median(far - near for far, near in pairs)

    def _start(self, one_way_us: int) -> None:
        self.process = subprocess.Popen(
            [str(self.binary), str(one_way_us), self.target],
            stdin=subprocess.PIPE,  # closed (or this process gone): the relay exits
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the relay did not start ({line.strip() or 'no port'})")
        self.url = through(self.database_url, int(line))

    def _stop(self) -> None:
        """End the relay by closing its input; it answers with its count."""
        if self.process is None:
            return
        try:
            out, _ = self.process.communicate(timeout=10)
            counted = out.strip().splitlines()
            self.relayed = int(counted[-1]) if counted and counted[-1].isdigit() else None
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
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


def probing(hopped: Hop | None) -> contextlib.AbstractContextManager[None]:
    """``hopped.probing()``, or nothing without a hop."""
    return hopped.probing() if hopped is not None else contextlib.nullcontext()


def _round_trip_us(conn: Connection) -> float:
    began = time.perf_counter()
    conn.exec_driver_sql("SELECT 1").scalar_one()
    return (time.perf_counter() - began) * 1e6


def _engine(url: str) -> Engine:
    """One connection at a time, each statement its own transaction (a probe
    holds no transaction open between its round trips)."""
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _median_round_trip_us(url: str, samples: int) -> float:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            _round_trip_us(conn)
            took = [_round_trip_us(conn) for _ in range(samples)]
        return statistics.median(took)
    finally:
        engine.dispose()
