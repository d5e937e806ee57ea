"""The private servers the tests start: they come up even when their port is taken before
they bind it."""

import socket
import threading

import psycopg

from tests import servers


def test_a_private_postgres_starts_on_another_port_when_its_port_is_taken(monkeypatch):
    """Another socket listens on the port free_port() gave, as an outgoing connection's
    ephemeral port once took it while initdb ran: the server starts on the next free one."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = iter([port])
        free_port = servers.free_port
        monkeypatch.setattr(servers, "free_port", lambda: next(chosen, None) or free_port())
        postgres = servers.PrivatePostgres()
        try:
            assert postgres.port != port
            with psycopg.connect(postgres.url()) as connection:
                assert connection.execute("SELECT 1").fetchone() == (1,)
        finally:
            postgres.destroy()


def test_a_restarted_private_postgres_waits_for_its_port():
    """A restart keeps its port, which its clients connect to: taken while the server was
    down, and let go a moment later, the server comes back on it."""
    postgres = servers.PrivatePostgres()
    try:
        postgres.stop()
        taken = socket.socket()
        # Bound past any TIME_WAIT left on the port; listening, it still keeps the server off.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", postgres.port))
        taken.listen()
        threading.Timer(servers.RESTART_PORT_WAIT * 1.5, taken.close).start()
        postgres.start()
        assert "could not bind" in postgres.output()
        with psycopg.connect(postgres.url()) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
    finally:
        postgres.destroy()
