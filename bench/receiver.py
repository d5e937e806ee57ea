"""A fast webhook receiver for the bench: asyncio, keep-alive, verifies every signature.

    python -m bench.receiver PORT SECRETS_JSON OUT_JSON

SECRETS_JSON maps a path (`/e3`) to its endpoint's signing secret. A path listed in
`dead_paths` is read and never answered (a dead endpoint); one in `delays` (path: seconds) is
answered that long after it arrived. A path listed in `failing_paths` answers 503 while
failing is on (SIGUSR1 turns it on and off); those receipts go to `refused`, not `received`.
With `"verify": false` it only counts receipts (the peer run, bench/peer, whose senders sign
another way); the default verifies. On SIGTERM it writes OUT_JSON and exits:
`{"received": [[event_id, path, unix_time], ...], "invalid": N, "verdicts": [...],
"refused": [[event_id, path, unix_time], ...]}`, where `verdicts[i]` says of `received[i]`
"ok", "bad_signature" or "stale" (a `t` more than 5 minutes from the receipt, which the
contract tells receivers to reject).
"""

import asyncio
import json
import signal
import sys
import time
from typing import cast

from deliveries import signature


def main() -> None:
    port, secrets_file, out_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    config = json.loads(open(secrets_file).read())  # noqa: SIM115 - read once
    secrets: dict[str, str] = config.get("secrets", {})
    verify = bool(config.get("verify", True))
    dead = set(config.get("dead_paths", []))
    # A path listed here is answered after this many seconds (a receiver that takes its time).
    delays: dict[str, float] = config.get("delays", {})
    failing_paths = set(config.get("failing_paths", []))
    failing = False
    received: list[tuple[str, str, float]] = []
    verdicts: list[str] = []
    refused: list[tuple[str, str, float]] = []
    invalid = 0

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # A stream server's connection: the base class names only what every transport has.
            self.transport = cast(asyncio.Transport, transport)
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            nonlocal invalid
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if len(self.buffer) < end + 4 + length:
                    return
                body = self.buffer[end + 4 : end + 4 + length]
                self.buffer = self.buffer[end + 4 + length :]
                path = head[0].split(" ")[1]
                if path in dead:
                    continue  # never answered: the sender's timeout decides
                now = time.time()
                receipt = (headers.get("md-event-id", ""), path, now)
                if failing and path in failing_paths:
                    refused.append(receipt)
                    self.transport.write(FAILING_ANSWER)
                    continue
                verdict = "ok"
                if verify:
                    verdict = verdict_of(
                        body, headers.get("md-signature", ""), secrets.get(path), now
                    )
                    invalid += verdict == "bad_signature"
                received.append(receipt)
                verdicts.append(verdict)
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                if path in delays:
                    asyncio.get_running_loop().call_later(
                        delays[path], self.transport.write, answer
                    )
                else:
                    self.transport.write(answer)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Protocol, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def toggle_failing() -> None:
            nonlocal failing
            failing = not failing

        loop.add_signal_handler(signal.SIGUSR1, toggle_failing)
        await stop.wait()
        server.close()

    asyncio.run(serve())
    with open(out_file, "w") as out:
        json.dump(
            {"received": received, "invalid": invalid, "verdicts": verdicts, "refused": refused},
            out,
        )


FAILING_ANSWER = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nfail"


def verdict_of(body: bytes, header: str, secret: str | None, now: float) -> str:
    """The receipt's verdict as a receiver using the service's own verifier gives it: "ok",
    "bad_signature", or "stale" (a `t` outside the contract's 5 minutes)."""
    if secret is None:
        return "bad_signature"
    try:
        timestamp = signature.verify(body, header, secret, tolerance=None)
    except signature.SignatureVerificationError:
        return "bad_signature"
    return "ok" if abs(now - timestamp) <= signature.DEFAULT_TOLERANCE else "stale"


if __name__ == "__main__":
    main()
