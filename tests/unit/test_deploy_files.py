"""deploy/: the files a deployment installs are the ones the drill runs with and
the docs point at, and each is checked by its own tool where that tool is here
(HAProxy, promtool, systemd-analyze). No database, no cluster: fast."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from string import Template

import pytest

from ecommerce.config import PROJECT_ROOT
from ecommerce.drill.cluster import DATABASE, Cluster
from ecommerce.drill.deployfiles import (
    DEPLOY_DIR,
    HAPROXY_CONFIG,
    HAPROXY_ERRORS_DIR,
    PGBOUNCER_INI,
    PGBOUNCER_USERLIST,
    haproxy_variables,
    render,
)
from ecommerce.drill.front import Balancer

PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
SYSTEMD_DIR = DEPLOY_DIR / "systemd"


def _tool(name: str) -> str:
    """A system program, or the test skipped saying which package brings it."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).is_file()), None
    )
    if found is None:
        packages = {"promtool": "prometheus", "systemd-analyze": "systemd"}
        pytest.skip(f"{name} is not installed (Debian's {packages.get(name, name)} package)")
    return found


def _balancer(tmp_path: Path) -> Balancer:
    return Balancer(tmp_path, [18001, 18002, 18003], stats_port=18404)


# --- HAProxy -----------------------------------------------------------------


def test_the_drills_haproxy_runs_deploys_config_as_it_is(tmp_path: Path):
    balancer = _balancer(tmp_path)
    assert balancer.config == HAPROXY_CONFIG
    assert set(balancer.environment) == haproxy_variables() != set()
    assert balancer.environment["SHOP_ERRORS_DIR"] == str(HAPROXY_ERRORS_DIR)
    assert balancer.environment["SHOP_APP2"] == "127.0.0.1:18002"
    assert not list(tmp_path.iterdir()), "the drill wrote a configuration of its own"


def test_the_drill_refuses_instances_the_config_does_not_name(tmp_path: Path):
    with pytest.raises(ValueError, match="SHOP_APP4"):
        Balancer(tmp_path, [18001, 18002, 18003, 18004])


def test_haproxy_accepts_the_config_with_the_drills_variables(tmp_path: Path):
    haproxy = _tool("haproxy")
    balancer = _balancer(tmp_path)
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(balancer.config)],
        env={"PATH": "/usr/bin:/bin", **balancer.environment},
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Without them it is refused: the variables are really read.
    unset = subprocess.run(
        [haproxy, "-c", "-f", str(balancer.config)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert unset.returncode != 0


def test_the_unknown_outcome_page_is_a_complete_503_to_retry():
    raw = (HAPROXY_ERRORS_DIR / "503-retry.http").read_bytes()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert b"Retry-After: 1" in lines and b"Content-Type: application/json" in lines
    assert b'"code": "busy"' in body


# --- PgBouncer ---------------------------------------------------------------


def _as_pattern(template: Path) -> re.Pattern[str]:
    """The template with each placeholder a named group, everything else literal."""
    text = template.read_text()
    parts = re.split(r"\$\{(\w+)\}", text)
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.*)" for i, part in enumerate(parts)
    )
    return re.compile(pattern)


def test_the_drills_pgbouncer_config_is_deploys_rendered_with_its_ports(tmp_path: Path):
    cluster = Cluster(tmp_path)
    node = cluster.nodes[0]
    ini = cluster.bouncer_config(node)
    rendered = _as_pattern(PGBOUNCER_INI).fullmatch(ini.read_text())
    assert rendered is not None, "the drill's pgbouncer.ini is not deploy/'s, rendered"
    assert rendered.groupdict() == {
        "POSTGRES_PORT": str(node.port),
        "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
        "PGBOUNCER_LISTEN_PORT": str(node.bouncer_port),
        "PGBOUNCER_AUTH_TYPE": "trust",
        "PGBOUNCER_AUTH_FILE": str(tmp_path / "users.txt"),
        "PGBOUNCER_LOGFILE": str(tmp_path / "node1-pgbouncer.log"),
    }
    assert f"\n{DATABASE} = host=127.0.0.1 port={node.port} dbname={DATABASE}\n" in ini.read_text()
    users = _as_pattern(PGBOUNCER_USERLIST).fullmatch((tmp_path / "users.txt").read_text())
    assert users is not None and users["PGBOUNCER_USER"] == "postgres"


def test_rendering_needs_a_value_for_every_placeholder_and_no_other():
    names = Template(PGBOUNCER_INI.read_text()).get_identifiers()
    values = dict.fromkeys(names, "x")
    assert "${" not in render(PGBOUNCER_INI, values)
    with pytest.raises(ValueError, match="POSTGRES_PORT"):
        render(PGBOUNCER_INI, {k: v for k, v in values.items() if k != "POSTGRES_PORT"})
    with pytest.raises(ValueError, match="NOT_IN_THE_FILE"):
        render(PGBOUNCER_INI, {**values, "NOT_IN_THE_FILE": "x"})


def test_the_example_settings_give_every_placeholder_a_value():
    """deploy/'s example environment files name exactly what their configs use."""
    for config, example in [
        (PGBOUNCER_INI, DEPLOY_DIR / "pgbouncer" / "pgbouncer.env"),
        (HAPROXY_CONFIG, DEPLOY_DIR / "haproxy" / "haproxy.env"),
    ]:
        given = {
            line.split("=", 1)[0]
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        }
        wanted = (
            haproxy_variables(config)
            if config == HAPROXY_CONFIG
            else set(Template(config.read_text()).get_identifiers())
            | set(Template(PGBOUNCER_USERLIST.read_text()).get_identifiers())
        )
        assert given == wanted, example


# --- the docs point at these files --------------------------------------------


def test_the_operations_guide_names_every_deploy_file():
    guide = (PROJECT_ROOT / "docs" / "OPERATIONS.md").read_text()
    files = sorted(str(p.relative_to(PROJECT_ROOT)) for p in DEPLOY_DIR.rglob("*") if p.is_file())
    assert files
    assert [f for f in files if f not in guide] == []


# --- Prometheus ----------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True
    )


def test_promtool_checks_the_alert_rules():
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_say():
    tested = _promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert has a case that fires and one that does not.
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    cases = (PROMETHEUS_DIR / "alerts.test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert alerts
    for alert in alerts:
        checks = re.findall(
            rf"alertname: {alert}\n\s+eval_time: \S+\n\s+exp_alerts:( \[\])?", cases
        )
        assert "" in checks and " []" in checks, f"{alert}: {checks}"


# --- systemd -----------------------------------------------------------------

#: What systemd-analyze says of a program that is not on this machine: the units
#: name the release's venv (/srv/shop/venv), which a test machine does not have.
_ABSENT_PROGRAM = re.compile(
    r"^\S+: Command /srv/shop/venv/bin/\w+ is not executable: No such file or directory$"
)


def test_systemd_analyze_verifies_the_units():
    analyze = _tool("systemd-analyze")
    units = sorted(str(p) for p in SYSTEMD_DIR.glob("*.service")) + sorted(
        str(p) for p in SYSTEMD_DIR.glob("*.timer")
    )
    assert len(units) == 7
    verified = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True
    )
    said = [
        line
        for line in (verified.stdout + verified.stderr).splitlines()
        if line.strip() and not _ABSENT_PROGRAM.match(line)
    ]
    if any("Failed to" in line and "bus" in line.lower() for line in said):
        pytest.skip(f"systemd-analyze cannot run here: {said}")
    assert said == []


def test_each_timer_runs_its_own_command_once_at_a_time():
    for timer in SYSTEMD_DIR.glob("*.timer"):
        service = timer.with_suffix(".service")
        text = service.read_text()
        command = timer.stem.removeprefix("shop-")
        assert "Type=oneshot" in text
        assert f"ExecStart=/srv/shop/venv/bin/flask --app ecommerce.wsgi {command}\n" in text
        assert "OnCalendar=" in timer.read_text()
