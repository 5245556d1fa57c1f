"""The deployment files of the source tree's ``deploy/`` (docs/OPERATIONS.md), as
the drill uses them, so that what is documented is what is tested:

* HAProxy's configuration as it is: its ``"${NAME}"`` references are HAProxy's
  own environment-variable syntax, and the drill sets those variables;
* PgBouncer's configuration and auth file rendered: PgBouncer reads no
  environment, so each ``${NAME}`` is replaced by the drill's value (a deploy
  does the same with envsubst), and nothing else changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from string import Template

from ecommerce.config import PROJECT_ROOT

DEPLOY_DIR = PROJECT_ROOT / "deploy"
HAPROXY_CONFIG = DEPLOY_DIR / "haproxy" / "haproxy.cfg"
HAPROXY_ERRORS_DIR = DEPLOY_DIR / "haproxy" / "errors"
PGBOUNCER_INI = DEPLOY_DIR / "pgbouncer" / "pgbouncer.ini"
PGBOUNCER_USERLIST = DEPLOY_DIR / "pgbouncer" / "userlist.txt"

_HAPROXY_REFERENCE = re.compile(r"\$\{(\w+)\}")


def deploy_file(path: Path) -> Path:
    """``path``, or a clear error when the drill runs without the source tree."""
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: the drill runs from the source tree (deploy/)")
    return path


def haproxy_variables(config: Path = HAPROXY_CONFIG) -> set[str]:
    """The environment variables HAProxy's configuration refers to (comments aside)."""
    names: set[str] = set()
    for line in deploy_file(config).read_text().splitlines():
        names.update(_HAPROXY_REFERENCE.findall(line.split("#", 1)[0]))
    return names


def render(template: Path, values: Mapping[str, str]) -> str:
    """``template`` with each ``${NAME}`` replaced by ``values[NAME]``. A
    placeholder without a value, or a value for no placeholder, is an error: the
    file and the drill must agree on every name."""
    text = Template(deploy_file(template).read_text())
    names = set(text.get_identifiers())
    if names != set(values):
        raise ValueError(
            f"{template}: placeholders {sorted(names)}, values given for {sorted(values)}"
        )
    return text.substitute(values)
