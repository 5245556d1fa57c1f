"""Alembic, configured for a database URL: used by `flask db`, the tests and the simulator.

The migration scripts are the top-level ``alembic/`` folder of the source tree.
An installed wheel carries them as data files under ``<prefix>/share/ecommerce``
(setup.cfg); they are found through the installed files of the distribution the
imported package came from, so a deploy migrates without the source tree, and
from a source checkout too (:func:`scripts_home` says how).
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from alembic import command
from ecommerce.config import PROJECT_ROOT

#: The last parts of the installed copy of alembic/env.py (setup.cfg's data_files).
_INSTALLED_ENV = ("share", "ecommerce", "alembic", "env.py")


@functools.cache
def scripts_home() -> Path:
    """The folder holding ``alembic.ini`` and ``alembic/``.

    * The package runs from a source tree (a checkout, an editable install): the
      tree's own top-level ``alembic/``.
    * The package is installed: where the installer put the data files of the
      distribution the imported package belongs to. That distribution is looked
      for only in the directory the package was imported from (its
      site-packages), and taken only if its list of installed files (pip's
      RECORD) names the very ``__init__.py`` that was imported; its
      ``share/ecommerce/alembic/env.py`` entry then says where the scripts are,
      whatever the install scheme (a venv, ``--user``, ``/usr/local``).

    Asking ``importlib.metadata.distribution("ecommerce")`` instead takes the
    first ``ecommerce`` metadata on ``sys.path``, which need not be the imported
    package's: run from a source checkout where ``pip install .`` left
    ``ecommerce.egg-info`` (the flask command puts the current directory first
    on ``sys.path``), it is that egg-info, whose file list is the sources'.
    """
    if (PROJECT_ROOT / "alembic" / "env.py").is_file():
        return PROJECT_ROOT
    # The imported ecommerce package's own __init__.py (this module is one level below).
    package = Path(__file__).resolve().parents[1] / "__init__.py"
    site = package.parent.parent
    for dist in importlib.metadata.distributions(name="ecommerce", path=[str(site)]):
        files = dist.files or []
        if not any(Path(str(f.locate())).resolve() == package for f in files):
            continue
        for file in files:
            if file.parts[-len(_INSTALLED_ENV) :] == _INSTALLED_ENV:
                return Path(str(file.locate())).resolve().parent.parent
    raise RuntimeError(
        "the migration scripts are missing: neither the source tree's alembic/ nor "
        f"share/ecommerce/alembic among the installed files of the ecommerce "
        f"distribution in {site} (the imported package's)"
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
