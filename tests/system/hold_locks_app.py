"""The shop's WSGI app for the fault test that kills a worker holding row locks.

Installed only by that test (``gunicorn ... tests.system.hold_locks_app:app``):
when a transaction is about to COMMIT with an order of the user named in
HOLD_LOCKS_USER among its writes, the worker writes its pid to the file named
by HOLD_LOCKS_SIGNAL and waits there, holding every lock of the transaction
(cart rows, item rows), so the test can SIGKILL it at exactly that moment.
The hook looks only at the data, so it catches a pay on the single-buyer path
and a combined pay alike. Production code knows nothing of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import Engine, event

from ecommerce import create_app

HOLD_SECONDS = 60
USER = os.environ["HOLD_LOCKS_USER"]
SIGNAL = Path(os.environ["HOLD_LOCKS_SIGNAL"])

app = create_app()


@event.listens_for(Engine, "commit")
def _hold_if_the_victim_is_paying(conn) -> None:
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1 FROM orders WHERE user_id = %s LIMIT 1", (USER,))
        paying = cursor.fetchone() is not None
    finally:
        cursor.close()
    if paying:
        SIGNAL.write_text(str(os.getpid()))
        time.sleep(HOLD_SECONDS)
