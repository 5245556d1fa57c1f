"""The front of the drill's topology: shop instances (gunicorn) and HAProxy in
front of them, health-checking /readyz, with the configuration of deploy/haproxy."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from ecommerce.drill.deployfiles import (
    HAPROXY_CONFIG,
    HAPROXY_ERRORS_DIR,
    deploy_file,
    haproxy_variables,
)
from ecommerce.drill.procs import free_port, program, signal_all, spawn, wait_for
from ecommerce.flashsale.cpu import descendants
from ecommerce.flashsale.server import GunicornProcess

#: The shop's settings in the drill: tight bounds, so a fault costs seconds.
INSTANCE_ENV = {
    "WEB_CONCURRENCY": "1",
    "LOCK_TIMEOUT_MS": "1000",
    "STATEMENT_TIMEOUT_MS": "3000",
    "DB_CONNECT_TIMEOUT_MS": "1000",
    "DB_POOL_TIMEOUT_MS": "2000",
    "COMBINING_QUEUE_WAIT_MS": "2000",
    "METRICS": "false",
}


class Instances:
    def __init__(
        self,
        root: Path,
        database_url: str,
        stats_url: str | None = None,
        count: int = 3,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: more settings on top of INSTANCE_ENV."""
        self.root = root
        stats = {"BALANCER_STATS_URL": stats_url} if stats_url else {}
        self.processes = [
            GunicornProcess(
                {**INSTANCE_ENV, "DATABASE_URL": database_url, **stats, **(env or {})},
                log_path=root / f"instance{n + 1}.log",
            )
            for n in range(count)
        ]

    def start(self) -> None:
        for process in self.processes:
            process.start(ready_timeout=60)

    @property
    def ports(self) -> list[int]:
        return [p.port for p in self.processes]

    def kill(self, index: int) -> None:
        """SIGKILL the instance's master and workers (a host lost)."""
        process = self.processes[index].process
        assert process is not None
        signal_all(descendants(process.pid), signal.SIGKILL)
        process.wait(30)
        self.processes[index].process = None

    def drain(self, index: int) -> None:
        """SIGTERM, as a deploy stops an instance: it refuses new connections at
        once, finishes the requests in flight, then exits."""
        self.processes[index].stop()

    def restart(self, index: int) -> None:
        old = self.processes[index]
        fresh = GunicornProcess(old.env, log_path=old.log_path)
        fresh.port = old.port  # the balancer knows it by its address
        fresh.env["GUNICORN_BIND"] = f"127.0.0.1:{old.port}"
        fresh.start(ready_timeout=60)
        self.processes[index] = fresh

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


class Balancer:
    """HAProxy with deploy/haproxy/haproxy.cfg as it is, its variables set to the
    drill's addresses: round robin over the instances that answer /readyz 200,
    checked every 500 ms (two failures take an instance out, two successes bring
    it back); a request whose connection an instance refused is sent to another
    (nothing reached the shop, so retrying it is safe); an instance that died
    mid-request or did not answer in time is answered deploy/'s 503-retry.http."""

    def __init__(self, root: Path, ports: list[int], stats_port: int | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.stats_port = stats_port or free_port()
        self.config = deploy_file(HAPROXY_CONFIG)
        self.environment = {
            "SHOP_FRONT_BIND": f"127.0.0.1:{self.port}",
            "SHOP_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            "SHOP_ERRORS_DIR": str(HAPROXY_ERRORS_DIR),
            **{f"SHOP_APP{n + 1}": f"127.0.0.1:{port}" for n, port in enumerate(ports)},
        }
        wanted = haproxy_variables(self.config)
        if set(self.environment) != wanted:
            raise ValueError(
                f"{self.config} names {sorted(wanted)}; the drill sets {sorted(self.environment)} "
                f"({len(ports)} instances)"
            )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = spawn(
            [program("haproxy"), "-db", "-f", str(self.config)],
            self.root / "haproxy.log",
            as_service=False,
            **self.environment,
        )
        wait_for("HAProxy to listen", self._listens, 30)

    def _listens(self) -> bool:
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def restart(self) -> None:
        """A hard restart: SIGKILL, then a new HAProxy on the same port."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
