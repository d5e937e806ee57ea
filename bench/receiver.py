"""A fast webhook receiver for the bench: asyncio, keep-alive, verifies every signature.

    python -m bench.receiver PORT SECRETS_JSON OUT_JSON

SECRETS_JSON maps a path (`/e3`) to its endpoint's signing secret. A path listed in
`dead_paths` is read and never answered (a dead endpoint); one in `delays` (path: seconds) is
answered that long after it arrived. With `"verify": false` it only counts
receipts (the peer run, bench/peer, whose senders sign another way); the default verifies. On
SIGTERM it writes OUT_JSON: `{"received": [[event_id, path, unix_time], ...], "invalid": N}`
and exits.
"""

import asyncio
import hashlib
import hmac
import json
import signal
import sys
import time
from typing import cast


def main() -> None:
    port, secrets_file, out_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    config = json.loads(open(secrets_file).read())  # noqa: SIM115 - read once
    secrets: dict[str, bytes] = {p: s.encode() for p, s in config.get("secrets", {}).items()}
    verify = bool(config.get("verify", True))
    dead = set(config.get("dead_paths", []))
    # A path listed here is answered after this many seconds (a receiver that takes its time).
    delays: dict[str, float] = config.get("delays", {})
    received: list[tuple[str, str, float]] = []
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
                if verify and not _verified(
                    body, headers.get("md-signature", ""), secrets.get(path)
                ):
                    invalid += 1
                received.append((headers.get("md-event-id", ""), path, time.time()))
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
        await stop.wait()
        server.close()

    asyncio.run(serve())
    with open(out_file, "w") as out:
        json.dump({"received": received, "invalid": invalid}, out)


def _verified(body: bytes, header: str, secret: bytes | None) -> bool:
    if secret is None:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t = parts.get("t", "")
    expected = hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(
        hmac.compare_digest(expected, v)
        for k, v in (p.split("=", 1) for p in header.split(",") if "=" in p)
        if k == "v1"
    )


if __name__ == "__main__":
    main()
