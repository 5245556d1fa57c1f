"""The shop's WSGI app for the fault test that kills a worker holding row locks.

Installed only by that test (``gunicorn ... tests.system.hold_locks_app:app``):
when a transaction is about to COMMIT with an order of the user named in
HOLD_LOCKS_USER among its writes, the worker writes its pid to the file named
by HOLD_LOCKS_SIGNAL and waits there, holding every lock of the transaction
(cart rows, item rows), so the test can SIGKILL it at exactly that moment.
It is told of every COMMIT through the shop's own seam (``Shop.before_commit``)
and looks only at the data, so it catches a pay on the single-buyer path and a
combined pay alike.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from ecommerce import create_app

HOLD_SECONDS = 60
USER = os.environ["HOLD_LOCKS_USER"]
SIGNAL = Path(os.environ["HOLD_LOCKS_SIGNAL"])


def _hold_if_the_victim_is_paying(session: Session) -> None:
    victims = text("SELECT 1 FROM orders WHERE user_id = :u LIMIT 1")
    if session.execute(victims, {"u": USER}).first() is not None:
        SIGNAL.write_text(str(os.getpid()))
        time.sleep(HOLD_SECONDS)


app = create_app()
app.extensions["shop"].before_commit = _hold_if_the_victim_is_paying
