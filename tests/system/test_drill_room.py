"""The drill's storm through a waiting room (ecommerce/drill/storm.py's room
mode, ecommerce/drill/room.py's rooms, ecommerce/drill/books.py's check),
against the real shop: gunicorn on the test database, the rooms opened by the
admin API, the buyers joining, polling as told and buying with their
admissions until both items are sold out."""

from __future__ import annotations

import pytest
from sqlalchemy import make_url

from ecommerce.drill.books import PhaseItems, check
from ecommerce.drill.procs import wait_for
from ecommerce.drill.room import Rooms
from ecommerce.drill.run import FaultResult
from ecommerce.drill.storm import Storm
from tests.helpers import commit_item
from tests.system.server import Server

pytestmark = pytest.mark.slow

SECRET = "drill-room-test-secret"
HOT, SCARCE = 40, 5


@pytest.fixture
def server(database_url, committed):
    # One worker: the rooms' probe of "every instance" reaches all there is.
    shop = Server(
        database_url,
        SECRET_KEY=SECRET,
        WEB_CONCURRENCY="1",
        QUEUE_POLL_MS="100",
        QUEUE_REFRESH_MS="50",
    ).start()
    yield shop
    shop.stop()


def test_the_storm_buys_through_the_room_only_when_admitted(server, database_url, committed):
    hot = commit_item(committed, "Hot", "1.00", HOT)
    scarce = commit_item(committed, "Scarce", "1.00", SCARCE)
    # Fewer admitted at once than clients: a line forms in front of each item.
    Rooms(SECRET, server.port, [server.port]).open({hot: 3, scarce: 1})
    storm = Storm("127.0.0.1", server.port, hot, "1.00", 8, "room-", scarce, room=True).start()
    try:
        wait_for(
            "both items sold out, and a place told so",
            lambda: len(storm.log.acknowledged) == HOT + SCARCE and storm.log.room["sold_out"],
            60,
        )
    finally:
        log = storm.stop()
    room = log.room
    assert room["waited"] > 0, room  # the line was in front of some buyers
    assert room["joined"] == room["admitted"] + room["sold_out"], room
    assert set(log.acknowledged) <= set(log.admitted)
    result = FaultResult("room")
    result.t0 = result.fault_at = min(t for _, _, _, _, t in log.events)
    libpq = make_url(database_url).set(drivername="postgresql")
    check(
        result,
        log,
        libpq.render_as_string(hide_password=False),
        PhaseItems(hot, HOT, scarce, SCARCE, roomed=True),
    )
    assert (result.lost, result.oversold, result.doubled, result.five_xx) == (0, 0, 0, 0)
    assert result.unadmitted == 0 and result.violations == []
    assert result.scarce_sold_out and result.room == dict(room)
    assert result.correct, result


def test_a_buyer_who_skips_the_line_is_refused_and_breaks_the_phase(
    server, database_url, committed
):
    item = commit_item(committed, "Hot", "1.00", 10)
    other = commit_item(committed, "Other", "1.00", 5)
    rooms = Rooms(SECRET, server.port, [server.port])
    rooms.open({item: 3})
    storm = Storm("127.0.0.1", server.port, item, "1.00", 2, "skip-").start()  # no room mode
    try:
        wait_for("adds refused", lambda: storm.log.room["queue_required"] >= 4, 30)
        assert not storm.log.acknowledged
        # The room closed: the same buyers pay without a place, which the
        # books on the database count.
        rooms.close([item])
        wait_for("a sale without a place", lambda: storm.log.acknowledged, 30)
    finally:
        log = storm.stop()
    result = FaultResult("skip", t0=min(t for _, _, _, _, t in log.events))
    libpq = make_url(database_url).set(drivername="postgresql")
    check(
        result,
        log,
        libpq.render_as_string(hide_password=False),
        PhaseItems(item, 10, other, 5, roomed=True),
    )
    assert result.room_refusals >= 4 and result.unadmitted == len(log.acknowledged) > 0
    assert (result.lost, result.oversold, result.doubled) == (0, 0, 0)
    assert not result.correct
