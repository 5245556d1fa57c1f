"""The unit of work (ecommerce/services/transactions.py): the shop sends BEGIN and
COMMIT itself, so a connection must never go back to the pool still inside a
transaction, or with psycopg2's autocommit left on."""

import pytest
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce.services.transactions import Unchanged
from tests.helpers import backend_pid, commit_item, wait_until_the_session_has_ended


def _one_connection_shop(make_app):
    return make_app(pool_size=1, pool_max_overflow=0).extensions["shop"]


def _the_pooled_connection_is_clean(shop) -> int:
    """The pool's one connection: out of any transaction, psycopg2 back in its
    own transaction mode; its server process."""
    with shop.db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.autocommit is False
        assert raw.info.transaction_status == TRANSACTION_STATUS_IDLE
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
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


def test_a_connection_that_died_in_a_failed_unit_is_replaced_not_reused(make_app, committed):
    """The unit's ROLLBACK cannot reach a server process that was ended: the
    connection is dropped, and the pool's next one is a new connection."""
    shop = _one_connection_shop(make_app)
    item = commit_item(committed, "A", "1.00", 5)

    def loses_its_server(session: Session) -> None:
        pid = _take_one(item)(session)
        with committed.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            other.commit()
        wait_until_the_session_has_ended(committed, pid)
        raise LookupError(pid)

    with pytest.raises(LookupError) as failed:
        shop.transaction(loses_its_server, "dies")

    assert _stock(committed, item) == 5
    assert _the_pooled_connection_is_clean(shop) != failed.value.args[0]
