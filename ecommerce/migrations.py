"""Alembic, configured for a database URL: used by `flask db`, the tests and the simulator."""

from __future__ import annotations

import functools

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command
from ecommerce.config import PROJECT_ROOT


def alembic_config(database_url: str) -> AlembicConfig:
    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    # Passed as an attribute, not an ini option: a URL may contain '%'.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> None:
    command.current(alembic_config(database_url), verbose=False)


@functools.cache
def head_revision() -> str:
    """The revision the code expects the schema to be at (read once per process)."""
    head = ScriptDirectory(str(PROJECT_ROOT / "alembic")).get_current_head()
    assert head is not None
    return head
