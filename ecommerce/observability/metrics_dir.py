"""The directory of prometheus-client's multiprocess mode, managed by the gunicorn
master (ecommerce/gunicorn_conf.py). Kept apart from ecommerce/observability/metrics.py so the
master never imports prometheus_client before the variable is set."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def make() -> str:
    return tempfile.mkdtemp(prefix="ecommerce-metrics-")


def empty(path: str) -> None:
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
