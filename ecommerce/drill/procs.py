"""Processes of the drill: free ports, programs from the system's packages, run
as an unprivileged user when the drill runs as root (PostgreSQL refuses root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVICE_USER = "postgres"  # Debian's PostgreSQL packages create it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program(name: str) -> str:
    """The path of a program from the system's packages, or a clear error."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", str(PG_BIN / name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"{name} is not installed: the drill needs Debian's packages "
        "postgresql-15-auto-failover, pg-auto-failover-cli, pgbouncer and haproxy"
    )


def service_user() -> dict[str, object]:
    """Popen arguments that drop root to the service user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(SERVICE_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def own_for_service(path: Path) -> None:
    """Give ``path`` (and what it holds) to the service user when running as root."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVICE_USER)
    if path.is_file():
        os.chown(path, entry.pw_uid, entry.pw_gid)
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            with contextlib.suppress(FileNotFoundError):  # a running server's temporary file
                os.chown(name, entry.pw_uid, entry.pw_gid)


#: Where pg_autoctl keeps its configuration and state (XDG_CONFIG_HOME and
#: XDG_DATA_HOME): inside the drill's directory, so runs never share them.
_xdg_root: list[Path] = []


def keep_service_state_in(root: Path) -> None:
    _xdg_root[:] = [root]


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    # PostgreSQL 15's own programs first (pg_autoctl finds pg_controldata and the
    # rest beside the pg_ctl it runs).
    env["PATH"] = f"{PG_BIN}:/usr/bin:/bin:/usr/sbin:/sbin"
    if os.geteuid() == 0:
        env["HOME"] = pwd.getpwnam(SERVICE_USER).pw_dir
    if _xdg_root:
        env["XDG_CONFIG_HOME"] = str(_xdg_root[0] / "config")
        env["XDG_DATA_HOME"] = str(_xdg_root[0] / "share")
    env.update(extra)
    return env


def spawn(args: list[str], log: Path, *, as_service: bool = True, **env: str) -> subprocess.Popen:
    """Start a long-running program in a session of its own, its output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=service_env(**env) if as_service else {**os.environ, **env},
            start_new_session=True,
            **(service_user() if as_service else {}),  # type: ignore[arg-type]
        )


def run(args: list[str], *, timeout: float = 60, **env: str) -> str:
    """Run a short command as the service user; its output, or an error naming it."""
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=service_env(**env),
        **service_user(),  # type: ignore[arg-type]
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_for(what: str, check: Callable[[], object], timeout: float, poll_s: float = 0.1):
    """Poll ``check`` until it returns something truthy; its value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as error:  # not there yet
            last = error
        else:
            if value:
                return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what} within {timeout:g} s" + (f" ({last})" if last else ""))
