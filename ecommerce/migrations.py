"""Alembic, configured for a database URL: used by `flask db`, the tests and the simulator.

The migration scripts are the top-level ``alembic/`` folder of the source tree.
An installed wheel carries them as data files under ``<prefix>/share/ecommerce``
(setup.cfg); they are found through the distribution's own list of installed
files, so a deploy migrates without the source tree.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command
from ecommerce.config import PROJECT_ROOT


@functools.cache
def scripts_home() -> Path:
    """The folder holding ``alembic.ini`` and ``alembic/``: the source tree when
    the package runs from it (a checkout, an editable install), else where the
    installed distribution put them."""
    if (PROJECT_ROOT / "alembic" / "env.py").is_file():
        return PROJECT_ROOT
    try:
        files = importlib.metadata.distribution("ecommerce").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.parts[-3:] == ("ecommerce", "alembic", "env.py"):
            return Path(str(file.locate())).resolve().parent.parent
    raise RuntimeError(
        "the migration scripts are missing: neither the source tree's alembic/ nor an "
        "installed ecommerce distribution's share/ecommerce/alembic was found"
    )


def alembic_config(database_url: str) -> AlembicConfig:
    home = scripts_home()
    ini = home / "alembic.ini"
    config = AlembicConfig(str(ini) if ini.is_file() else None)
    config.set_main_option("script_location", str(home / "alembic"))
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
    head = ScriptDirectory(str(scripts_home() / "alembic")).get_current_head()
    assert head is not None
    return head
