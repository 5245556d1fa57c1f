"""Test-only hooks, switched on by environment variables that production refuses.

TEST_HOLD_LOCKS_USER=<user> with TEST_HOLD_LOCKS_SIGNAL=<file>: when that user
pays, the worker writes its pid to the file once the stock rows are locked and
then waits there, holding the locks, so a fault test can SIGKILL it at exactly
that moment. This deliberately breaks the rule "never hold a row lock while
waiting"; it exists to prove what happens when a worker dies holding locks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

HOLD_SECONDS = 60


def hold_locks_hook(user: str, signal_file: str) -> Callable[[str], None]:
    def after_stock_taken(user_id: str) -> None:
        if user_id != user:
            return
        Path(signal_file).write_text(str(os.getpid()))
        time.sleep(HOLD_SECONDS)

    return after_stock_taken
