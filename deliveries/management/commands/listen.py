"""A local receiver for building an integration: see deliveries arrive, verified.

    python manage.py listen --organization demo [--forward-to http://localhost:3000/hooks]

Registers a temporary sandbox endpoint pointing at this command, prints every delivery with
its signature check, optionally forwards it (body and headers as received) to your app and
prints what your app answered, and deletes the endpoint when stopped (Ctrl-C, SIGTERM, SIGHUP).
The endpoint holds a lease of LISTEN_LEASE_SECONDS, renewed while the command runs: if the
command is killed outright, the service deletes it once the lease runs out (beat, each minute).
"""

import json
import signal
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from django.utils import timezone

from accounts.models import Environment
from accounts.selectors import environment_get
from core.errors import InvalidInput
from deliveries import signature
from webhooks import services

FORWARDED_HEADERS = ("Content-Type", "User-Agent", "MD-Signature", "MD-Event-Id",
                     "MD-Event-Type", "MD-Delivery-Id", signature.STANDARD_ID,
                     signature.STANDARD_TIMESTAMP, signature.STANDARD_SIGNATURE)  # fmt: skip


class Command(BaseCommand):
    help = __doc__.strip().splitlines()[0] if __doc__ else ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organization", required=True, metavar="SLUG")
        parser.add_argument("--port", type=int, default=0, help="default: a free port")
        parser.add_argument("--events", default="*", help="comma-separated types, or *")
        parser.add_argument("--forward-to", metavar="URL", help="also POST each delivery here")
        parser.add_argument(
            "--max-deliveries", type=int, default=0, help="stop after this many (0: run until ^C)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS:
            raise CommandError(
                "listen needs WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS on (it is in local runs): "
                "its endpoint is on 127.0.0.1"
            )
        try:
            environment = environment_get(
                organization_slug=options["organization"], name=Environment.Name.SANDBOX
            )
        except Environment.DoesNotExist:
            raise CommandError(f"no organization {options['organization']!r}") from None
        done = threading.Event()
        received = {"count": 0}
        host = "127.0.0.1"
        try:
            server = ThreadingHTTPServer((host, options["port"]), self._handler(options))
        except (OSError, OverflowError) as exc:  # taken, or no port at all
            raise CommandError(f"cannot listen on {host}:{options['port']}: {exc}") from None
        server.daemon_threads = True
        port = server.server_port
        events = [e.strip() for e in options["events"].split(",") if e.strip()]
        lease = timedelta(seconds=settings.LISTEN_LEASE_SECONDS)
        try:
            created = services.endpoint_create(
                environment=environment,
                url=f"http://{host}:{port}/",
                enabled_events=events,
                expires_at=timezone.now() + lease,
            )
        except InvalidInput as exc:
            server.server_close()
            raise CommandError(exc.message) from None
        self.secret = created.signing_secret
        self.max = options["max_deliveries"]
        self.received, self.done = received, done
        endpoint = created.endpoint
        # A closed terminal (SIGHUP) or a polite kill (SIGTERM) cleans up as Ctrl-C does, from
        # before it says it listens. (Signals reach the main thread only; run from another
        # thread, its caller stops it.)
        if threading.current_thread() is threading.main_thread():
            for stop in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(stop, lambda *_: done.set())
        self.stdout.write(
            f"Listening on http://{host}:{port}/ as {endpoint.public_id} "
            f"({environment}, events: {', '.join(endpoint.enabled_events)})\n"
            f"Signing secret for this session: {self.secret}\n"
            "Publish an event (API, admin, or manage.py publish_event) to see it here. ^C stops."
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        renewing = threading.Thread(
            target=self._renew, args=(endpoint, lease, done), name="listen-lease", daemon=True
        )
        renewing.start()
        try:
            while not done.wait(0.5):  # waking up lets the signal handlers run
                pass
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()
            services.endpoint_delete(endpoint=endpoint)
            self.stdout.write(f"Deleted {endpoint.public_id}; received {received['count']}.")

    def _renew(self, endpoint: Any, lease: timedelta, done: threading.Event) -> None:
        """Renews the endpoint's lease a few times per lease, until the command stops."""
        try:
            while not done.wait(lease.total_seconds() / 4):
                if not services.endpoint_lease_renew(
                    endpoint=endpoint, until=timezone.now() + lease
                ):
                    done.set()  # deleted meanwhile (the console, the API): nothing to listen for
        finally:
            close_old_connections()

    def _handler(self, options: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
        command = self
        forward_to = options["forward_to"]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 200
                note = command._describe(body, self.headers)
                if forward_to:
                    status, note = command._forward(forward_to, body, self.headers, note)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                command.stdout.write(note)
                command.received["count"] += 1
                if command.max and command.received["count"] >= command.max:
                    command.done.set()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _describe(self, body: bytes, headers: Any) -> str:
        try:
            signature.verify(body, headers.get(signature.HEADER, ""), self.secret)
            check = "signature verified"
        except signature.SignatureVerificationError as exc:
            check = f"SIGNATURE INVALID ({exc})"
        try:
            pretty = json.dumps(json.loads(body), indent=2)
        except ValueError:
            pretty = body[:2000].decode("utf-8", errors="replace")
        return (
            f"--> {headers.get('MD-Event-Type')} {headers.get('MD-Event-Id')} "
            f"(delivery {headers.get('MD-Delivery-Id')}): {check}\n{pretty}"
        )

    def _forward(self, url: str, body: bytes, headers: Any, note: str) -> tuple[int, str]:
        forwarded = {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}
        try:
            response = requests.post(
                url, data=body, headers=forwarded, timeout=10, allow_redirects=False
            )
        except requests.RequestException as exc:
            return 502, f"{note}\n<-- forward to {url} failed: {type(exc).__name__}"
        return response.status_code, f"{note}\n<-- {url} answered {response.status_code}"
