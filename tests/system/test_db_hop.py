"""The database one network hop away (ecommerce/flashsale/hop.py): the relay
in front of the real PostgreSQL passes every byte on, in order and whole, each
way later by its delay; several connections at once; a close passed on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ecommerce.flashsale import hop
from tests.helpers import backend_pid, wait_until_the_session_has_ended


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Path:
    built = hop.build(tmp_path_factory.mktemp("relay"))
    if isinstance(built, str):
        pytest.skip(built)
    return built


def test_where_the_relay_connects_and_the_url_through_it():
    url = "postgresql+psycopg2://u:p%40ss@db.example:6432/shop?sslmode=disable"
    assert hop.target_of(url) == "db.example:6432"
    assert hop.target_of("postgresql+psycopg2://u@127.0.0.1/shop") == "127.0.0.1:5432"
    socket_dir = "postgresql+psycopg2://postgres@/shop?host=%2Fsrv%2Fpg"
    assert hop.target_of(socket_dir) == "/srv/pg/.s.PGSQL.5432"
    # libpq's query parameters win over the URL's host and port, as psycopg2 reads them
    assert hop.target_of("postgresql+psycopg2://u@/shop?host=db.internal&port=5433") == (
        "db.internal:5433"
    )
    assert hop.target_of("postgresql+psycopg2://u@/shop?host=db-a:5434") == "db-a:5434"
    assert hop.target_of(socket_dir + "&port=5433") == "/srv/pg/.s.PGSQL.5433"
    with pytest.raises(ValueError, match="several hosts"):
        hop.target_of("postgresql+psycopg2://u@/shop?host=db-a:5432&host=db-b:5432")
    # through the relay: nothing left that would take the driver elsewhere
    through = hop.through(socket_dir + "&port=5433&hostaddr=10.0.0.1&sslmode=disable", 40000)
    assert through == "postgresql+psycopg2://postgres@127.0.0.1:40000/shop?sslmode=disable"
    assert hop.through(url, 40000) == (
        "postgresql+psycopg2://u:p%40ss@127.0.0.1:40000/shop?sslmode=disable"
    )


def test_every_byte_arrives_in_order_later_by_the_delay(relay, database_url):
    round_trip_us = 4000
    with hop.Hop(relay, database_url, round_trip_us) as hopped:
        assert hopped.url != database_url and "127.0.0.1" in hopped.url
        # the hop measured as asked: within the spread of a loaded machine
        assert 0.5 * round_trip_us <= hopped.added_us <= 3 * round_trip_us
        engine = create_engine(hopped.url, poolclass=NullPool)
        outcomes: list[object] = []
        start = threading.Barrier(6)

        def client(n: int) -> None:
            try:
                with engine.connect() as conn:
                    start.wait(10)
                    # a large answer (many reads and writes of the relay), whole and in order
                    digits = (
                        "SELECT string_agg(lpad(g::text, 7, '0'), '') FROM generate_series(1, :n) g"
                    )
                    big = conn.execute(text(digits), {"n": 150_000 + n}).scalar_one()
                    assert big == "".join(f"{g:07d}" for g in range(1, 150_001 + n))
                    # each exchange takes at least the round trip added (the relay's
                    # delay is a floor it sleeps to, not an estimate)
                    for _ in range(5):
                        began = time.perf_counter()
                        assert conn.execute(text("SELECT :n"), {"n": n}).scalar_one() == n
                        took_us = (time.perf_counter() - began) * 1e6
                        assert took_us >= hopped.added_us * 0.5, took_us
                outcomes.append(n)
            except BaseException as error:  # handed to the test
                outcomes.append(error)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(o for o in outcomes if isinstance(o, int)) == list(range(6)), outcomes
        engine.dispose()
    assert hopped.relayed == 6 + 1  # counted when it stopped: the clients and its measure


@pytest.fixture
def engines(relay, database_url) -> Iterator[tuple[Engine, Engine]]:
    """(straight to the database, through a relay 1 ms away), one connection a use."""
    straight = create_engine(database_url, poolclass=NullPool)
    with hop.Hop(relay, database_url, 1000) as hopped:
        through = create_engine(hopped.url, poolclass=NullPool)
        yield straight, through
        through.dispose()
    straight.dispose()


def test_a_client_that_goes_away_is_gone_from_the_database_too(engines):
    straight, through = engines
    with through.connect() as conn:
        pid = backend_pid(conn)
    through.dispose()  # closed: the relay passes the end on
    wait_until_the_session_has_ended(straight, pid, timeout=30)


def test_a_session_the_server_ends_is_ended_for_the_client_too(engines):
    straight, through = engines
    with through.connect() as conn:
        pid = backend_pid(conn)
        conn.rollback()
        with straight.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        # the server's close reaches the client: an error, not a wait
        with pytest.raises(DBAPIError):
            conn.execute(text("SELECT 1"))
