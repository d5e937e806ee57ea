"""Real servers for tests: a webhook receiver on 127.0.0.1, Celery workers, a private Redis.

Tests that stop, restart or flush a server use a private one started here on a free port;
the machine's shared PostgreSQL and Redis are never touched that way.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent

# What production's settings require of the environment, as placeholders: a process given
# these with DJANGO_SETTINGS_MODULE=config.settings.production loads them (the broker's port
# answers nothing: reading settings connects to no broker).
PRODUCTION_VARIABLES = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/kinetic",
    "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "example.com",
    "SIGNING_SECRET_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OTA=",
}


def database_url() -> str:
    """The test database's URL, for the servers the tests start and for psycopg connections of
    their own."""
    from django.db import connection

    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Polls until `predicate()` is truthy; fails the test with what it last saw, and what
    `explain()` adds (a server's log, say)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            more = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r}){more}")
        time.sleep(interval)


class Logged:
    """A process of the tests that prints to `log`."""

    log: Path

    def output(self) -> str:
        """What it printed; a failing test's message takes the end."""
        return self.log.read_text(errors="replace")


# --- A webhook receiver ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before answering; a large value never answers in time
    stream: int = 0  # answer with this many bytes, sent in 64 KiB chunks, instead of `body`
    endless: bool = False  # a body that never ends (no Content-Length)
    drip_headers: bool = False  # the status line, then one header byte every 0.2 s, forever
    reset: bool = False  # close the connection with a TCP reset instead of answering


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    # A listen backlog like a real server's: the standard library's 5 overflowed when a test
    # sent to 300 endpoints at once on a loaded machine, and a dropped connection attempt that
    # is not retried in time fails the attempt the test expected to succeed.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender that hung up (its timeout ran out) leaves the answer nowhere to go: expected
        # in the tests that time a sender out, and not worth a traceback in every run's output.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


class Receiver:
    """Records every request; answers per path from a script of replies, then 200."""

    def __init__(self, tls: "tuple[str, str] | None" = None) -> None:
        self.bytes_streamed = 0
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.responders: dict[str, Callable[[Received], Reply]] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Buffered: the status line, headers and body leave in one write. Written apart, the
            # body waited on the client's delayed ACK (Nagle): ~40 ms added to every answer.
            wbufsize = 65536

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, dict(self.headers.items()), body, time.time())
                    )
                    script = receiver.scripts.get(self.path) or []
                    reply = script.pop(0) if script else None
                    if reply is None and self.path in receiver.responders:
                        reply = receiver.responders[self.path](receiver.requests[-1])
                    reply = reply or Reply()
                if reply.delay and receiver.closing.wait(reply.delay):
                    return
                if reply.reset:
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.close_connection = True
                    return
                if reply.drip_headers:
                    self._drip()
                    return
                if reply.stream or reply.endless:
                    self._stream(reply)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def _drip(self) -> None:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                while not receiver.closing.wait(0.2):
                    try:
                        self.wfile.write(b"a")
                        self.wfile.flush()
                    except OSError:
                        return

            def _stream(self, reply: Reply) -> None:
                self.send_response(reply.status)
                if reply.endless:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(reply.stream))
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                while (reply.endless or sent < reply.stream) and not receiver.closing.is_set():
                    try:
                        self.wfile.write(chunk)
                    except OSError:
                        break
                    sent += len(chunk)
                    with receiver.lock:
                        receiver.bytes_streamed += len(chunk)
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:  # (certificate file, key file)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts[path] = list(replies)

    def respond(self, path: str, responder: "Callable[[Received], Reply]") -> None:
        """Answers each request to `path` (once its script is used up) as `responder` says;
        called under the receiver's lock, so it sees every earlier request."""
        with self.lock:
            self.responders[path] = responder

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


# --- Redis -----------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="kinetic-redis-")
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(" ".join(words).encode() + b"\r\n")
            return s.recv(4096)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- Celery ----------------------------------------------------------------------------------

FAST_DELIVERY_SETTINGS = {
    "WEBHOOKS_RETRY_SCHEDULE": "1,1,1,1",
    "WEBHOOKS_DELIVERY_TIMEOUT": "2",
    "WEBHOOKS_CLAIM_LEASE_MARGIN": "2",
    "WEBHOOKS_REENQUEUE_AFTER": "2",
    "WEBHOOKS_SWEEP_INTERVAL": "0.3",
    "WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS": "true",
}


class CeleryWorker(Logged):
    """`celery -A config worker -B` against the test database and broker."""

    embedded_beat = True
    waits_at_start = True  # returns once ready (wait_ready), or not waiting at all

    def __init__(self, database_url: str, broker_url: str, **settings: str) -> None:
        self.schedule_dir = tempfile.mkdtemp(prefix="kinetic-beat-")
        self.log = Path(self.schedule_dir) / "worker.log"
        self.stopped_output: str | None = None
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "TEST_DATABASE_URL": database_url,
            "TEST_CELERY_BROKER_URL": broker_url,
            **FAST_DELIVERY_SETTINGS,
            **settings,
        }
        beat = ["-B"] if self.embedded_beat else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", *beat,
             "--schedule", str(Path(self.schedule_dir) / "beat"), "--loglevel", "INFO",
             "--concurrency", "8", "--without-gossip", "--without-mingle",
             "--hostname", f"test-{os.getpid()}-{free_port()}@%h"],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if self.waits_at_start:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Until the worker says it is ready: RuntimeError if it exited first, AssertionError
        if it is still starting after 30 s."""
        wait_for(lambda: b"ready." in self.log.read_bytes() or self.process.poll(), timeout=30)
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL to the worker's whole process group: nothing gets to clean up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def starve(self, seconds: float) -> None:
        """Stops the worker's whole process group for `seconds` (SIGSTOP, then SIGCONT): a
        process the CPUs leave waiting, at will."""
        self.freeze()
        try:
            time.sleep(seconds)
        finally:
            self.thaw()

    def freeze(self) -> None:
        """SIGSTOP to the worker's whole process group: it does nothing until `thaw`."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.stopped_output is None and self.log.exists():
            self.stopped_output = super().output()
        shutil.rmtree(self.schedule_dir, ignore_errors=True)

    def output(self) -> str:
        """What it printed, also once stopped (the log's folder is removed then): a supervisor
        shows a worker's output after its replacement failed to start."""
        return super().output() if self.stopped_output is None else self.stopped_output


class CeleryWorkerWithoutBeat(CeleryWorker):
    """A worker alone: no beat anywhere."""

    embedded_beat = False


class _StartingWorker(CeleryWorker):
    waits_at_start = False


class SupervisedWorker:
    """A worker restarted whenever it exits, as compose's `restart:` or systemd would.

    Celery workers can exit when the broker vanishes under them (kombu raises while restoring
    unacknowledged messages to a broker that is gone); deliveries survive that by design, and
    in production the process supervisor starts a new worker.
    """

    def __init__(self, database_url: str, broker_url: str, **settings: str) -> None:
        self.args = (database_url, broker_url)
        self.settings = settings
        self.restarts = 0
        self.current = CeleryWorker(*self.args, **self.settings)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(0.5):
            if self.current.process.poll() is None:
                continue
            self.current.stop()
            # Waited for apart, so that a worker whose start failed is still ours to stop or keep.
            worker = _StartingWorker(*self.args, **self.settings)
            try:
                worker.wait_ready()
            except RuntimeError:
                worker.stop()  # it exited: the broker is still away; try again
                continue
            except AssertionError:
                # Running but not ready in time (waiting for the broker, or a loaded machine):
                # supervised like any other, restarted if it exits; output() shows its log.
                pass
            if self.stopping.is_set():  # stop() came meanwhile and will not see this one
                worker.stop()
                return
            self.current = worker
            self.restarts += 1

    def output(self) -> str:
        return self.current.output()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.current.stop()


# --- PostgreSQL ------------------------------------------------------------------------------


# How many times a private PostgreSQL tries to start when its port is taken, and how long a
# restart waits between tries for the port to be let go.
START_PORT_TRIES = 5
RESTART_PORT_WAIT = 1.0


class PrivatePostgres(Logged):
    """A PostgreSQL cluster of our own (initdb into a temporary folder, a free port), to stop
    and start at will. Runs as the `postgres` user when the tests run as root. `server_settings`
    are passed to the server as `-c name=value` (e.g. max_connections="16")."""

    def __init__(self, **server_settings: str) -> None:
        self.server_settings = server_settings
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = found[-1].parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kinetic-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "log"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._start(restart=False)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_owner, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._start(restart=True)

    def _start(self, *, restart: bool) -> None:
        """Starts the server on its port. The port was free when chosen, but initdb takes a
        second or two before the server first binds it, and a stopped server's port is free
        while it is down: an outgoing connection's ephemeral port (the same range) took it
        once. A first start then moves to another port; a restart, whose clients need the
        port, waits for it to be let go."""
        for tries_left in reversed(range(START_PORT_TRIES)):
            binds_failed = self._binds_failed()
            try:
                self._pg_ctl_start()
                return
            except subprocess.CalledProcessError:
                if not tries_left or self._binds_failed() == binds_failed:
                    raise  # not the port's fault, or out of tries
            if restart:
                time.sleep(RESTART_PORT_WAIT)
            else:
                self.port = free_port()

    def _binds_failed(self) -> int:
        return self.output().count("could not bind") if self.log.exists() else 0

    def _pg_ctl_start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.server_settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l",
                  str(self.log), "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def freeze(self) -> None:
        """SIGSTOP to the server and its sessions: a PostgreSQL that hangs. The kernel still
        takes connections and acknowledges what is sent; nothing answers until `thaw`."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _pids(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def manage(env: dict[str, str], *args: str) -> str:
    """`manage.py` with `env`; the last line it printed (the value a script needs)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


def provision(database_url: str, broker_url: str, scopes: str) -> str:
    """Migrates a private database, makes the organization `acme` and returns a sandbox key
    with `scopes`, through the management commands as an operator would."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "TEST_DATABASE_URL": database_url,
        "TEST_CELERY_BROKER_URL": broker_url,
    }
    manage(env, "migrate")
    manage(env, "create_organization", "acme")
    return manage(env, "create_api_key", "--organization=acme", "--environment=sandbox",
                  f"--scopes={scopes}")  # fmt: skip


class Gunicorn(Logged):
    """The web app as production runs it (gunicorn.conf.py, without --preload: each worker
    imports the app itself), on a free port, with the test settings. Ready once every worker
    has loaded the app and a request is answered."""

    # gunicorn.conf.py, which gunicorn reads from its working directory when no --config is
    # given, plus a hook that marks each worker once it has loaded the app.
    CONFIG = """\
import os
import runpy

_production = runpy.run_path({conf!r})
globals().update((k, v) for k, v in _production.items() if not k.startswith("__"))
_production_post_worker_init = globals().get("post_worker_init")


def post_worker_init(worker):
    if _production_post_worker_init is not None:
        _production_post_worker_init(worker)
    open(os.path.join({ready!r}, str(worker.pid)), "w").close()
"""

    def __init__(self, database_url: str, broker_url: str, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="kinetic-gunicorn-"))
        self.log = self.dir / "gunicorn.log"
        ready = self.dir / "ready"
        ready.mkdir()
        config = self.dir / "gunicorn_test.conf.py"
        config.write_text(self.CONFIG.format(conf=str(ROOT / "gunicorn.conf.py"), ready=str(ready)))
        workers = int(settings.pop("WORKERS", "1"))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "config.wsgi", "--config", str(config),
                 "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                 "--log-level", "warning"],
                cwd=ROOT,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "DJANGO_SETTINGS_MODULE": "config.settings.test",
                    "TEST_DATABASE_URL": database_url,
                    "TEST_CELERY_BROKER_URL": broker_url,
                    **settings,
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

        def booted() -> bool:
            return len(list(ready.iterdir())) >= workers or self.process.poll() is not None

        def tail() -> str:
            return self.output()[-6000:]

        try:
            # The master accepts connections before its workers have imported Django, which
            # takes seconds for workers booting together on a loaded machine: a test's first
            # requests would wait on that, spread over every worker.
            wait_for(booted, timeout=60, explain=tail)
            wait_for(self._answers, timeout=60, explain=tail)
        except AssertionError:
            self.stop()
            raise
        if self.process.poll() is not None:
            output = tail()
            self.stop()
            raise RuntimeError(f"gunicorn exited:\n{output}")

    def _answers(self) -> bool:
        """Any HTTP answer from /healthz (no key, no database), or gunicorn gone."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/")
        except OSError:
            return self.process.poll() is not None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- PgBouncer -------------------------------------------------------------------------------


def pgbouncer_binary() -> str | None:
    """Debian installs PgBouncer in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


class PrivatePgBouncer(Logged):
    """A PgBouncer of our own on a free port, pooling transactions in front of the machine's
    PostgreSQL, which it reaches as `postgres` with trust, as the tests do.

    Every database name passes through to the same name upstream; `databases` adds entries of
    its own (name = libpq parameters, e.g. `dbname=... connect_query='...'`). `pool_size` is
    PgBouncer's default_pool_size: server connections per database and user. The machine's
    PostgreSQL is not reconfigured. PgBouncer refuses to run as root: under root it switches to
    the `postgres` user.
    """

    def __init__(
        self,
        pool_size: int = 1,
        databases: dict[str, str] | None = None,
        upstream: str = "host=127.0.0.1 port=5432",
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (Debian package pgbouncer)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kinetic-pgbouncer-"))
        self.log = self.dir / "pgbouncer.log"
        entries = {**(databases or {}), "*": upstream}  # "*" is the fallback: listed last
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        config = [
            "[databases]",
            *(f"{name} = {parameters}" for name, parameters in entries.items()),
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.dir / 'users.txt'}",
            "admin_users = postgres",
            "pool_mode = transaction",
            f"default_pool_size = {pool_size}",
            "max_client_conn = 500",
        ]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            config.append("user = postgres")
        (self.dir / "pgbouncer.ini").write_text("\n".join(config) + "\n")
        self.process = subprocess.Popen(
            [binary, str(self.dir / "pgbouncer.ini")],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        # PgBouncer logs "process up" once it listens.
        wait_for(lambda: b"process up" in self.log.read_bytes() or self.process.poll(), 15)
        if self.process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited:\n{self.output()}")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def show(self, what: str) -> list[dict[str, Any]]:
        """A SHOW command of PgBouncer's admin console (POOLS, STATS, SERVERS, ...) as rows."""
        # The console speaks only the simple query protocol, which psycopg uses for a query
        # without parameters.
        with psycopg.connect(self.url("pgbouncer"), autocommit=True, row_factory=dict_row) as c:
            return c.execute(f"SHOW {what}").fetchall()

    def destroy(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: PgBouncer's immediate shutdown
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
