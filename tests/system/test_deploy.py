"""What a deploy does, from outside: a clean virtualenv, ``pip install .`` (not
editable, no extras), then ``flask db upgrade``, ``flask seed``, gunicorn with the
default config, and the design note's curl commands. The package's runtime
dependencies alone must do it, with the package's own WSGI module
(``ecommerce.wsgi:app``, ``flask --app ecommerce.wsgi``), from either place a
deploy runs in:

* an empty directory (no source tree at all);
* a source checkout where ``pip install .`` was run, which leaves
  ``ecommerce.egg-info`` (and ``build/``) beside the sources.

Before the first fix, `flask db upgrade` failed (the migration scripts were looked
up beside the installed package and were not shipped) and gunicorn's default
gevent worker failed to start (its `packaging` dependency came only with the test
extras). Before the second, `flask db upgrade` failed in the checkout: the
installed package's migrations were looked up through the first ``ecommerce``
distribution on ``sys.path``, the checkout's egg-info, which lists none."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ecommerce.config import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.server_independent]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _call(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _copy_checkout(target: Path) -> None:
    """The source tree as a fresh checkout has it: every file git tracks or would
    track (ignored ones left out: no venv, instance/, egg-info), copied from the
    working tree so that uncommitted changes are what is tested."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.parametrize("place", ["empty directory", "source checkout"])
def test_an_installed_wheel_alone_migrates_seeds_and_serves(tmp_path: Path, place: str):
    if place == "source checkout" and shutil.which("git") is None:
        pytest.skip("git is needed to copy the source tree")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    if place == "source checkout":
        _copy_checkout(app_dir)
        source = "."
    else:
        source = str(PROJECT_ROOT)
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(PROJECT_ROOT / "constraints.txt"),
            source,
        ],
        cwd=app_dir,
        check=True,
        timeout=600,
    )
    if place == "source checkout":  # what the deploy meets there
        assert (app_dir / "ecommerce.egg-info").is_dir()
    port = _free_port()
    # The default configuration: no DATABASE_URL (the embedded PostgreSQL under
    # the app directory's instance/), nothing of this test environment.
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / "flask"), "--app", "ecommerce.wsgi", *args],
            cwd=app_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    try:
        for step in (("db", "upgrade"), ("seed",)):
            done = flask(*step)
            assert done.returncode == 0, f"flask {' '.join(step)}:\n{done.stderr}"
        # Nothing of the source tree was used: the package came from the venv.
        where = subprocess.run(
            [str(bin_dir / "python"), "-c", "import ecommerce; print(ecommerce.__file__)"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert str(venv) in where, where
        # What a gunicorn worker imports loads nothing of the simulator or the drill.
        loaded = subprocess.run(
            [
                str(bin_dir / "python"),
                "-c",
                "import sys, ecommerce.wsgi; "
                "print([m for m in sys.modules if m.startswith(('ecommerce.flashsale', "
                "'ecommerce.drill'))])",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip() == "[]", loaded.stdout

        gunicorn = subprocess.Popen(
            [
                str(bin_dir / "gunicorn"),
                *("-c", "python:ecommerce.gunicorn_conf", "ecommerce.wsgi:app"),
            ],
            cwd=app_dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "gunicorn.log", "w"),  # noqa: SIM115 - closed with the process
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and gunicorn.poll() is None:
                try:
                    status, _ = _call(port, "GET", "/readyz")
                except OSError:
                    status = None
                if status == 200:
                    break
                time.sleep(0.1)
            log = (tmp_path / "gunicorn.log").read_text()
            assert status == 200, f"gunicorn never became ready (exit {gunicorn.poll()}):\n{log}"

            # The design note's three curl commands.
            added = _call(port, "POST", "/cart/user123/add", {"item_id": 1, "quantity": 2})
            assert added[0] == 200, added
            quote = _call(port, "GET", "/cart/user123/checkout")
            assert quote[0] == 200 and quote[1]["total"] == "1.00", quote
            paid = _call(port, "POST", "/cart/user123/pay", {"amount": 1.00})
            assert paid[0] == 201 and paid[1]["status"] == "paid", paid
        finally:
            os.killpg(gunicorn.pid, signal.SIGTERM)
            gunicorn.wait(60)
    finally:
        flask("embedded-db", "stop")
