"""schemathesis against a live gunicorn, on the document the server publishes:
no 5xx, and every status, content type, header and body as documented, for
every operation, with authentication off and on."""

import subprocess

import pytest

from ecommerce.flashsale.server import BIN
from tests.system.server import Server

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def schemathesis(port: int, *headers: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(BIN / "st"),
        "run",
        f"http://127.0.0.1:{port}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "25",
        "--seed",
        "12",
        "--workers",
        "1",  # hypothesis' lambda reprs are not thread-safe on Python 3.11
    ]
    for header in headers:
        command += ["--header", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("auth", ["off", "on", "admin"])
def test_the_live_server_keeps_its_document(database_url, committed, auth):
    """off: no token; on: AUTH_REQUIRED with a buyer's token; admin: an admin
    token, so the admin API is exercised past its 401/403."""
    env = {"AUTH_REQUIRED": "true" if auth == "on" else "false", "LOG_LEVEL": "warning"}
    server = Server(database_url, **env)
    server.flask("seed")
    headers = []
    if auth != "off":
        admin = ["--admin"] if auth == "admin" else []
        token = server.flask("issue-token", *admin, "user1").stdout.split()[-1]
        headers.append(f"Authorization: Bearer {token}")
    with server:
        run = schemathesis(server.port, *headers)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
