"""The database's own ceiling for the pay transaction, measured with pgbench.

The pgbench script is compiled from the very statement objects the shop
executes (ecommerce.repositories and ecommerce.transactions), so "the same pay
transaction" is literally the same SQL: the add's upsert, then BEGIN, SET LOCAL
timeouts, the cart lock, the order write, the strategy's stock statements,
COMMIT. pgbench sends them with the simple query protocol, as psycopg2 does
(values inlined as literals), so parse and plan costs count on both sides.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.sql import ClauseElement

from ecommerce import embedded_db
from ecommerce import repositories as sql
from ecommerce.services.transactions import SET_LOCAL_TIMEOUTS

DEFAULT_CLIENTS = (4, 16, 64)


def _sql(statement: ClauseElement) -> str:
    compiled = statement.compile(dialect=PGDialect_psycopg2(paramstyle="named"))
    text = str(compiled).strip()
    return re.sub(r"\s*\n\s*", "\n", text) + ";"


STRATEGY_STATEMENTS: dict[str, list[ClauseElement]] = {
    "for_update": [sql.LOCK_ITEMS, sql.DECREMENT_ITEMS],
    "atomic": [sql.TAKE_IF_AVAILABLE],
}


def pay_script(strategy: str, first_item: int, last_item: int, price: str) -> str:
    """A pgbench script: one execution = one add and one pay of one unit."""
    if strategy not in STRATEGY_STATEMENTS:
        raise ValueError(f"no ceiling for strategy {strategy!r}")
    # In simple-protocol mode pgbench pastes a variable's text into the SQL, so
    # text values carry their own quotes, as psycopg2 inlines them.
    variables = (
        "SELECT quote_literal('pgbench-' || :client_id || '-' || :n) AS user_id,"
        " :item AS item_id, 1 AS quantity, quote_literal('{' || :item || '}') AS item_ids,"
        f" quote_literal('{{1}}') AS quantities, quote_literal('{{{price}}}') AS unit_prices,"
        f" {price} AS total, {price} AS amount, :item AS take_id, 1 AS take_quantity,"
        f" {price} AS expected_price, quote_literal('3000ms') AS lock,"
        " quote_literal('10000ms') AS stmt, quote_literal('15000ms') AS idle,"
        " quote_literal('paid') AS status, 0 AS reserve_s"
    )
    lines = [
        r"\set n random(1, 2000000000)",
        rf"\set item random({first_item}, {last_item})",
        variables,
        r"\gset",
        _sql(sql.ADD_TO_CART_LINE),
        "BEGIN;",
        # One round trip, as the shop sends them (ecommerce/db.py).
        _sql(SET_LOCAL_TIMEOUTS)[:-1] + " \\;\n" + _sql(sql.LOCK_CART_FOR_PAY),
        _sql(sql.WRITE_PAID_ORDER),
        *(_sql(s) for s in STRATEGY_STATEMENTS[strategy]),
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CeilingRun:
    clients: int
    tps: float
    failed: int


def _connection_args(database_url: str) -> tuple[list[str], dict[str, str]]:
    url = make_url(database_url)
    args = []
    host = url.query.get("host") or url.host
    if host:
        args += ["-h", str(host)]
    if url.port:
        args += ["-p", str(url.port)]
    if url.username:
        args += ["-U", url.username]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return [*args, url.database or "postgres"], env


def run_pgbench(database_url: str, script: str, clients: int, seconds: float) -> CeilingRun:
    conn_args, env = _connection_args(database_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    args = ["-n", "-M", "simple", "-f", path, "-c", str(clients), "-j", str(min(clients, 2))]
    args += ["-T", str(max(1, round(seconds))), *conn_args]
    try:
        out = embedded_db.pgbench(args, env=env, timeout=seconds + 60)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"pgbench failed ({exc.returncode}); see the log above") from exc
    finally:
        os.unlink(path)
    tps = re.search(r"tps = ([0-9.]+)", out)
    if tps is None:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return CeilingRun(clients, float(tps.group(1)), int(failed.group(1)) if failed else 0)


def measure_ceiling(
    database_url: str,
    strategy: str,
    first_item: int,
    last_item: int,
    price: str,
    clients: tuple[int, ...] = DEFAULT_CLIENTS,
    seconds: float = 3,
) -> list[CeilingRun]:
    script = pay_script(strategy, first_item, last_item, price)
    return [run_pgbench(database_url, script, c, seconds) for c in clients]
