"""The servers a bench run needs: a fresh `kinetic_bench` database and gunicorn in front of it.

Both are context managers, so a failing or interrupted run still stops gunicorn (by the pid we
started, then its process group) and drops the database. Only the bench database is ever
created or dropped; the name is checked again right before each statement.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from bench.config import REPO_ROOT, SETTINGS_MODULE, BenchError, check_database_name

# Held for the whole run on the maintenance connection, per database name: two bench runs on
# one database would otherwise drop it under each other (runs on distinct names may overlap).
_ADVISORY_LOCK_CLASS = 0x6B62  # "kb"


# --- PostgreSQL ------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(db: dict, *, keep: bool = False) -> Iterator[None]:
    """Creates the bench database fresh (dropping a leftover), migrates it, drops it after."""
    name = db["NAME"]
    check_database_name(name)
    try:
        admin = connect(db, "postgres")
    except psycopg.OperationalError as exc:
        raise BenchError(f"cannot reach PostgreSQL for the bench database: {exc}") from None
    with admin:
        locked = admin.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [_ADVISORY_LOCK_CLASS, name]
        ).fetchone()
        if not (locked and locked[0]):
            raise BenchError("another bench run holds the bench database; wait for it to finish")
        _drop(admin, name)
        check_database_name(name)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            from django.core.management import call_command

            call_command("migrate", interactive=False, verbosity=0)
            yield
        finally:
            from django.db import connections

            connections.close_all()
            if not keep:
                _drop(admin, name)


def connect(db: dict, dbname: str) -> psycopg.Connection:
    """An autocommit connection to `dbname` on the server of `db` (a DATABASES entry)."""
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=int(db["PORT"] or 5432),
        user=db["USER"] or "postgres",
        password=db["PASSWORD"] or None,
        dbname=dbname,
        autocommit=True,
    )


def _drop(admin: psycopg.Connection, name: str) -> None:
    check_database_name(name)
    # FORCE ends sessions still connected to this database (only ours: gunicorn's and Django's).
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- gunicorn --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GunicornConfig:
    """Everything gunicorn is told, on its command line (no config file is read)."""

    worker_class: str = "gthread"
    workers: int = 2
    threads: int = 4

    @property
    def label(self) -> str:
        if self.worker_class == "gthread":
            return f"gthread -w {self.workers} --threads {self.threads}"
        return f"{self.worker_class} -w {self.workers}"

    def argv(self, bind: str) -> list[str]:
        args = [
            "--bind",
            bind,
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--log-level",
            "warning",
            "--no-control-socket",  # gunicorn 25+ would share ~/.gunicorn/gunicorn.ctl otherwise
        ]
        if self.worker_class == "gthread":
            args += ["--threads", str(self.threads)]
        return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Gunicorn:
    config: GunicornConfig
    env: dict[str, str] = field(default_factory=dict)  # over the bench's own environment
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    _empty_config: Path | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115  kept open for the process's life
            prefix="bench-gunicorn-", suffix=".log", delete=False
        )
        self.log_path = Path(log.name)
        # An empty config file, so a gunicorn.conf.py in the repository root changes nothing.
        empty = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="bench-gunicorn-conf-", suffix=".py", delete=False
        )
        empty.close()
        self._empty_config = Path(empty.name)
        env = {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "PYTHONUNBUFFERED": "1",
        }
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(self._empty_config),
            *self.config.argv(f"127.0.0.1:{self.port}"),
            "config.wsgi:application",
        ]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we can stop it and its workers
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/bench/bare"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310  http://127.0.0.1
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise BenchError(f"gunicorn did not answer {url} within {timeout:.0f}s:\n{self.log()}")

    def log(self, last: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-last:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # graceful: the arbiter stops its workers
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # The arbiter is not reaped yet, so its group id is still the one we created
                # for it at start: this reaches its workers and nothing else.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        for path in (self.log_path, self._empty_config):
            if path is not None:
                path.unlink(missing_ok=True)
        self.log_path = self._empty_config = None


@contextlib.contextmanager
def gunicorn(config: GunicornConfig, env: dict[str, str] | None = None) -> Iterator[Gunicorn]:
    server = Gunicorn(config, env or {})
    try:
        server.start()
        yield server
    finally:
        server.stop()


# Chosen with `python -m bench --only gunicorn` (see docs/benchmarks.md) on a 2-CPU machine
# shared with PostgreSQL and wrk: two sync workers were the fastest on the bare view in every
# run, and steady. gthread workers keep each keep-alive connection on the worker that accepted
# it, so wrk's 8 connections split between the 2 workers at random (8/0 up to 4/4) on every
# run, and the figures with them; sync workers close the connection after each response, so
# every request is balanced again by accept().
DEFAULT_GUNICORN = GunicornConfig("sync", workers=2)
