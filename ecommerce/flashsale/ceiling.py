"""The database's own ceiling for the pay transaction, measured with pgbench.

The pgbench script is compiled from the very statement objects the shop
executes (ecommerce.repositories and ecommerce.services.transactions), so "the
same pay transaction" is literally the same SQL, for a batch of one: the add's
upsert, then BEGIN with the SET LOCAL timeouts, the cart lock, the order id, the
item lock, the one statement that writes the order and takes the stock,
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

from ecommerce.database import embedded
from ecommerce.models import ORDER_STATUS_PAID
from ecommerce.repositories import CartRepository, ItemRepository, OrderRepository
from ecommerce.services.transactions import TransactionPolicy, set_local_timeouts_sql

DEFAULT_CLIENTS = (4, 16, 64)


def _sql(statement: ClauseElement) -> str:
    compiled = statement.compile(dialect=PGDialect_psycopg2(paramstyle="named"))
    text = str(compiled).strip()
    return re.sub(r"\s*\n\s*", "\n", text) + ";"


def _array(value: str) -> str:
    """A pgbench expression for a one-element array literal (an array value the
    statement casts, as the ARRAY[...] psycopg2 sends)."""
    return f"quote_literal('{{' || {value} || '}}')"


def pay_script(first_item: int, last_item: int, price: str) -> str:
    """A pgbench script: one execution = one add and one pay of one unit, each a
    batch of one, with the statements the shop sends for it."""
    # In simple-protocol mode pgbench pastes a variable's text into the SQL, so
    # text values carry their own quotes, as psycopg2 inlines them.
    user_ids = _array("'pgbench-' || :client_id || '-' || :r")
    variables = (
        f"SELECT {user_ids} AS users, {_array(':item')} AS items, {_array(':item')} AS item_ids,"
        f" {_array('1')} AS quantities, 1 AS n,"
    )
    # The order's id comes from the shop's own NEXT_ORDER_IDS, read by an outer
    # SELECT that also spells the arrays WRITE_PAID_ORDERS takes (same round trip).
    next_ids = _sql(OrderRepository.NEXT_ORDER_IDS)[:-1]
    order_arrays = (
        f"SELECT {_array('next.id')} AS o_ids, {_array('next.id')} AS l_orders"
        f" FROM ({next_ids}) AS next"
    )
    variables += (
        f" {user_ids} AS user_ids, {user_ids} AS o_users, {user_ids} AS l_users,"
        f" {_array(price)} AS o_totals, {_array(':item')} AS l_items,"
        f" {_array('1')} AS l_quantities, {_array(price)} AS l_prices,"
        " quote_literal('{}') AS k_users, quote_literal('{}') AS k_keys,"
        " quote_literal('{}') AS k_fingerprints, quote_literal('{}') AS k_results,"
        f" 0 AS ttl_s, {_array(':item')} AS s_items, {_array('1')} AS s_quantities,"
        f" quote_literal('{ORDER_STATUS_PAID}') AS status, 0 AS reserve_s,"
        " quote_literal(clock_timestamp()::text) AS now"
    )
    lines = [
        r"\set r random(1, 2000000000)",
        rf"\set item random({first_item}, {last_item})",
        variables,
        r"\gset",
        _sql(CartRepository.ADD_TO_CART_LINES),
        # One round trip, as the shop begins a transaction
        # (services/transactions.py, UnitOfWork).
        "BEGIN \\; " + set_local_timeouts_sql(TransactionPolicy()) + ";",
        _sql(CartRepository.LOCK_CARTS_FOR_PAY),
        order_arrays,
        r"\gset",
        _sql(ItemRepository.LOCK_ITEMS),
        _sql(OrderRepository.WRITE_PAID_ORDERS),
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
        out = embedded.pgbench(args, env=env, timeout=seconds + 60)
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
    first_item: int,
    last_item: int,
    price: str,
    clients: tuple[int, ...] = DEFAULT_CLIENTS,
    seconds: float = 3,
) -> list[CeilingRun]:
    script = pay_script(first_item, last_item, price)
    return [run_pgbench(database_url, script, c, seconds) for c in clients]
