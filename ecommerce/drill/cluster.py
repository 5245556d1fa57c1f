"""A PostgreSQL primary and its synchronous standby under pg_auto_failover, on
loopback ports: a monitor and two keepers (`pg_autoctl`), each node with a
PgBouncer beside it, as each database host would have in production.

Why pg_auto_failover (docs/DESIGN.md): two data nodes and a monitor, no
consensus store to run; a failover only to a standby known to be in sync; and
`pg_autoctl show uri` prints the multi-host connection string the shop takes.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

from ecommerce.drill.deployfiles import PGBOUNCER_INI, PGBOUNCER_USERLIST, render
from ecommerce.drill.procs import (
    PG_BIN,
    free_port,
    keep_service_state_in,
    own_for_service,
    program,
    run,
    signal_all,
    spawn,
    wait_for,
)
from ecommerce.flashsale.cpu import descendants

DATABASE = "shop"

#: The monitor's health checks, tightened for a sale night (the defaults take
#: ~30 s to promote). The keepers' network_partition_timeout stays below
#: primary_demote_timeout, so an isolated primary demotes itself before the
#: monitor promotes its standby: never two primaries taking writes.
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "2000",
    "pgautofailover.primary_demote_timeout": "3000",
}
KEEPER_NETWORK_PARTITION_TIMEOUT_S = "2"


@dataclass
class Node:
    name: str
    pgdata: Path
    port: int  # PostgreSQL
    bouncer_port: int  # PgBouncer beside it
    keeper: subprocess.Popen | None = None
    bouncer: subprocess.Popen | None = None
    frozen: list[int] = field(default_factory=list)

    def dsn(self, port: int | None = None) -> str:
        return f"host=127.0.0.1 port={port or self.port} dbname={DATABASE} user=postgres"

    def postgres_pids(self) -> list[int]:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return descendants(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            return []

    def host_pids(self) -> list[int]:
        """Everything that runs on this "host": keeper, PostgreSQL, PgBouncer."""
        pids: list[int] = []
        for process in (self.keeper, self.bouncer):
            if process is not None and process.poll() is None:
                pids += descendants(process.pid)
        return sorted(set(pids + self.postgres_pids()))


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.monitor_dir = root / "monitor"
        self.monitor_port = free_port()
        self.monitor: subprocess.Popen | None = None
        self.nodes = [Node(f"node{n}", root / f"node{n}", free_port(), free_port()) for n in (1, 2)]

    @functools.cached_property
    def pg_autoctl(self) -> str:
        return program("pg_autoctl")

    @functools.cached_property
    def pgbouncer(self) -> str:
        return program("pgbouncer")

    # --- bring-up -------------------------------------------------------------

    @property
    def monitor_uri(self) -> str:
        return (
            f"postgresql://autoctl_node@127.0.0.1:{self.monitor_port}/pg_auto_failover"
            "?sslmode=disable"
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keep_service_state_in(self.root)
        own_for_service(self.root)
        self.monitor = spawn(
            [
                self.pg_autoctl,
                "create",
                "monitor",
                "--pgdata",
                str(self.monitor_dir),
                "--pgport",
                str(self.monitor_port),
                "--hostname",
                "127.0.0.1",
                "--auth",
                "trust",
                "--no-ssl",
                "--run",
            ],
            self.root / "monitor.log",
        )
        wait_for("the monitor to answer", lambda: self._monitor_query("SELECT 1"), 60)
        self._tighten_monitor()
        first, second = self.nodes
        self._start_keeper(first)
        wait_for(f"{first.name} to be single", lambda: self.state(first) == "single", 120)
        self._fast_checkpoints(first)
        self._start_keeper(second)
        wait_for(f"{second.name} to be secondary", lambda: self.state(second) == "secondary", 180)
        self._fast_checkpoints(second)
        for node in self.nodes:
            self._set_network_partition_timeout(node)
        wait_for("a primary with a synchronous standby", self.synchronous, 60)
        for node in self.nodes:
            self._start_bouncer(node)

    def _tighten_monitor(self) -> None:
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.monitor_port, dbname="pg_auto_failover", user="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for name, value in MONITOR_SETTINGS.items():
                    cur.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()

    def _fast_checkpoints(self, node: Node) -> None:
        """checkpoint_completion_target = 0: a standby's base backup waits for a
        spread checkpoint on the primary (a minute and a half at the defaults,
        with the drill's small database), which this makes immediate."""
        conn = psycopg2.connect(node.dsn(), connect_timeout=2)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("ALTER SYSTEM SET checkpoint_completion_target = 0")
                cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()

    def _start_keeper(self, node: Node) -> None:
        node.keeper = spawn(
            [
                self.pg_autoctl,
                "create",
                "postgres",
                "--pgdata",
                str(node.pgdata),
                "--pgport",
                str(node.port),
                "--hostname",
                "127.0.0.1",
                "--name",
                node.name,
                "--auth",
                "trust",
                "--no-ssl",
                "--dbname",
                DATABASE,
                "--monitor",
                self.monitor_uri,
                "--pgctl",
                str(PG_BIN / "pg_ctl"),
                "--run",
            ],
            self.root / f"{node.name}.log",
        )

    def _set_network_partition_timeout(self, node: Node) -> None:
        """Once the node has joined: the keeper reloads its configuration on the
        change, and a reload while it registers fails the registration."""
        run(
            [
                self.pg_autoctl,
                "config",
                "set",
                "--pgdata",
                str(node.pgdata),
                "timeout.network_partition_timeout",
                KEEPER_NETWORK_PARTITION_TIMEOUT_S,
            ]
        )

    def bouncer_config(self, node: Node) -> Path:
        """The node's PgBouncer configuration: deploy/pgbouncer's pgbouncer.ini
        and userlist.txt rendered with the drill's ports and paths (trust
        authentication on loopback, as the postgres user); its path."""
        users = self.root / "users.txt"
        users.write_text(
            render(PGBOUNCER_USERLIST, {"PGBOUNCER_USER": "postgres", "PGBOUNCER_PASSWORD": ""})
        )
        ini = self.root / f"{node.name}-pgbouncer.ini"
        ini.write_text(
            render(
                PGBOUNCER_INI,
                {
                    "POSTGRES_PORT": str(node.port),
                    "PGBOUNCER_LISTEN_ADDR": "127.0.0.1",
                    "PGBOUNCER_LISTEN_PORT": str(node.bouncer_port),
                    "PGBOUNCER_AUTH_TYPE": "trust",
                    "PGBOUNCER_AUTH_FILE": str(users),
                    "PGBOUNCER_LOGFILE": str(self.root / f"{node.name}-pgbouncer.log"),
                },
            )
        )
        return ini

    def _start_bouncer(self, node: Node) -> None:
        """PgBouncer on the node's host, in transaction mode, in front of that
        node's PostgreSQL only: the shop's multi-host URL lists the bouncers."""
        ini = self.bouncer_config(node)
        for path in (ini, self.root / "users.txt"):
            own_for_service(path)
        node.bouncer = spawn([self.pgbouncer, str(ini)], self.root / f"{node.name}-pgbouncer.out")
        wait_for(
            f"{node.name}'s PgBouncer", lambda: self._can_connect(node.dsn(node.bouncer_port)), 30
        )

    def restart_bouncer(self, node: Node) -> None:
        if node.bouncer is not None and node.bouncer.poll() is None:
            node.bouncer.send_signal(signal.SIGTERM)
            node.bouncer.wait(30)
        self._start_bouncer(node)

    # --- the shop's view --------------------------------------------------------

    def shop_url(self, *, through_bouncers: bool = True) -> str:
        """libpq's multi-host form, as `pg_autoctl show uri` prints it."""
        ports = [n.bouncer_port if through_bouncers else n.port for n in self.nodes]
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    # --- state ------------------------------------------------------------------

    def _monitor_query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with psycopg2.connect(self.monitor_uri, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        conn.close()
        return rows

    def state(self, node: Node) -> str | None:
        rows = self._monitor_query(
            "SELECT reportedstate::text FROM pgautofailover.node WHERE nodename = %s", (node.name,)
        )
        return rows[0][0] if rows else None

    def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, goal) state as the monitor sees it."""
        rows = self._monitor_query(
            "SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node"
        )
        return {name: (reported, goal) for name, reported, goal in rows}

    def primary(self) -> Node | None:
        """The node the monitor holds as primary (None while it promotes one)."""
        for node in self.nodes:
            reported, goal = self.states().get(node.name, ("", ""))
            if reported == goal == "primary" or reported == goal == "wait_primary":
                return node
        return None

    def standby_of(self, primary: Node) -> Node:
        return next(n for n in self.nodes if n is not primary)

    def synchronous(self) -> bool:
        """A primary whose standby is attached and confirms commits."""
        primary = self.primary()
        if primary is None or self.states()[primary.name] != ("primary", "primary"):
            return False
        rows = self._query(
            primary,
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
        )
        return bool(rows and rows[0][0])

    def _query(self, node: Node, sql: str) -> list[tuple]:
        with psycopg2.connect(node.dsn(), connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        return rows

    @staticmethod
    def _can_connect(dsn: str) -> bool:
        psycopg2.connect(dsn, connect_timeout=2).close()
        return True

    # --- faults -----------------------------------------------------------------

    def kill_host(self, node: Node) -> None:
        """The node's host dies: keeper, PostgreSQL and PgBouncer, SIGKILL."""
        signal_all(node.host_pids(), signal.SIGKILL)
        for process in (node.keeper, node.bouncer):
            if process is not None:
                process.wait(30)

    def restart_host(self, node: Node) -> None:
        """The host comes back: its keeper (which rejoins as a standby, with
        pg_rewind if needed) and its PgBouncer."""
        node.keeper = spawn(
            [self.pg_autoctl, "run", "--pgdata", str(node.pgdata)], self.root / f"{node.name}.log"
        )
        self._start_bouncer(node)

    def freeze_host(self, node: Node) -> None:
        node.frozen = node.host_pids()
        signal_all(node.frozen, signal.SIGSTOP)

    def thaw_host(self, node: Node) -> None:
        signal_all(node.frozen, signal.SIGCONT)
        node.frozen = []

    def stop(self) -> None:
        for node in self.nodes:
            if node.frozen:
                self.thaw_host(node)
        for process in [
            *(n.bouncer for n in self.nodes),
            *(n.keeper for n in self.nodes),
            self.monitor,
        ]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for process in [
            *(n.bouncer for n in self.nodes),
            *(n.keeper for n in self.nodes),
            self.monitor,
        ]:
            if process is None:
                continue
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_all(descendants(process.pid), signal.SIGKILL)
        for node in self.nodes:  # a PostgreSQL left behind by a killed keeper
            signal_all(node.postgres_pids(), signal.SIGKILL)
