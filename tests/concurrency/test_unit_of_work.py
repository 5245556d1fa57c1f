"""The unit of work (ecommerce/services/transactions.py): the shop sends BEGIN and
COMMIT itself, so a connection must never go back to the pool still inside a
transaction, or with psycopg2's autocommit left on."""

import pytest
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from ecommerce.errors import ServiceBusy
from ecommerce.services.transactions import Unchanged
from tests.helpers import backend_pid, commit_item, end_the_session


def _one_connection_shop(make_app):
    return make_app(pool_size=1, pool_max_overflow=0).extensions["shop"]


def _the_pooled_connection_is_clean(shop) -> int:
    """The pool's one connection: out of any transaction, psycopg2 back in its
    own transaction mode; its server process."""
    with shop.db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.autocommit is False
        assert raw.info.transaction_status == TRANSACTION_STATUS_IDLE
        pid = backend_pid(conn)
        conn.rollback()
    return pid


def _stock(engine, item):
    with engine.connect() as conn:
        return conn.execute(text("SELECT stock FROM items WHERE id = :i"), {"i": item}).scalar_one()


def _take_one(item):
    def work(session: Session) -> int:
        session.execute(text("UPDATE items SET stock = stock - 1 WHERE id = :i"), {"i": item})
        return backend_pid(session)

    return work


def test_a_committed_unit_leaves_its_connection_clean(make_app, committed):
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)

    pid = shop.transaction(_take_one(item), "take")

    assert _stock(committed, item) == 4
    assert _the_pooled_connection_is_clean(shop) == pid  # the same connection, reused


def test_a_unit_that_fails_writes_nothing_and_leaves_its_connection_clean(make_app, committed):
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)

    def fails_after_writing(session: Session) -> None:
        _take_one(item)(session)
        raise LookupError("a mistake after the write")

    with pytest.raises(LookupError):
        shop.transaction(fails_after_writing, "fails")

    assert _stock(committed, item) == 5
    _the_pooled_connection_is_clean(shop)


def test_an_unchanged_unit_is_rolled_back_and_answers_its_result(make_app, committed):
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)

    def looks_only(session: Session) -> None:
        _take_one(item)(session)  # taken, then given up: nothing to commit
        raise Unchanged("looked")

    assert shop.transaction(looks_only, "looks") == "looked"
    assert _stock(committed, item) == 5
    _the_pooled_connection_is_clean(shop)


def test_the_pool_takes_every_connection_back_out_of_its_transaction(make_app, committed):
    """Seen as the pool takes the connection back, not later: from then on
    another thread may check it out."""
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)
    taken_back = []

    def at_checkin(dbapi_connection, _record) -> None:
        state = dbapi_connection.autocommit, dbapi_connection.info.transaction_status
        taken_back.append(state)

    def fails(session: Session) -> None:
        raise LookupError("a mistake")

    def unchanged(session: Session) -> None:
        raise Unchanged(None)

    event.listen(shop.db.engine.pool, "checkin", at_checkin)
    try:
        shop.transaction(_take_one(item), "commits")
        with pytest.raises(LookupError):
            shop.transaction(fails, "fails")
        shop.transaction(unchanged, "unchanged")
    finally:
        event.remove(shop.db.engine.pool, "checkin", at_checkin)

    assert taken_back == [(False, TRANSACTION_STATUS_IDLE)] * 3


def test_a_connection_that_died_in_a_failed_unit_is_replaced_not_reused(make_app, committed):
    """The unit's ROLLBACK cannot reach a server process that was ended: the
    connection is dropped, and the pool's next one is a new connection."""
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)

    def loses_its_server(session: Session) -> None:
        pid = _take_one(item)(session)
        end_the_session(committed, pid)
        raise LookupError(pid)

    with pytest.raises(LookupError) as failed:
        shop.transaction(loses_its_server, "dies")

    assert _stock(committed, item) == 5
    assert _the_pooled_connection_is_clean(shop) != failed.value.args[0]


def test_a_connection_lost_at_commit_is_503_and_not_run_again(make_app, committed):
    """Its outcome is the client's to settle (an Idempotency-Key): the unit is
    not run a second time, though nothing of it committed here."""
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)
    runs = []

    def takes(session: Session) -> None:
        runs.append(_take_one(item)(session))

    shop.before_commit = lambda session: end_the_session(committed, backend_pid(session))
    with pytest.raises(ServiceBusy):
        shop.transaction(takes, "lost at commit")
    shop.before_commit = None

    assert len(runs) == 1
    assert _stock(committed, item) == 5
    _the_pooled_connection_is_clean(shop)


def test_a_connection_lost_before_commit_runs_the_unit_once_more(make_app, committed):
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)
    runs = []

    def dies_the_first_time(session: Session) -> None:
        runs.append(_take_one(item)(session))
        if len(runs) == 1:
            end_the_session(committed, runs[0])
            session.execute(text("SELECT 1"))  # finds the connection dead

    shop.transaction(dies_the_first_time, "lost before commit")

    assert len(runs) == 2 and runs[0] != runs[1]
    assert _stock(committed, item) == 4
