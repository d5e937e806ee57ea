"""The README's first command: `bin/dev` runs the whole service on embedded defaults.

A copy of the repository (the files a commit of this working tree would hold) runs
`bin/dev` with no DATABASE_URL or broker set, so it is on SQLite and a folder broker exactly as
on a developer's fresh clone. Through its API, an endpoint on a local receiver gets a published
event, signed with the secret the API returned: the web server, the worker, the broker folder
and the SQLite hot path all took part. Ctrl-C stops every process it started.
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import IO

import pytest
import requests

from deliveries import signature
from tests.servers import Receiver, free_port, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
KEY_LINE = re.compile(r"Sandbox API key (md_test_\w+)")


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in listed.decode().split("\0") if p and (REPO / p).is_file()]


@pytest.fixture
def dev_checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for relative in _tracked_files():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    return root


def _environment(port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "CELERY_", "DJANGO_", "WEBHOOKS_", "PYTEST"))
    }
    # This test's interpreter's venv: bin/dev would otherwise build one in the copy.
    env["KINETIC_VENV"] = sys.prefix
    env["PORT"] = str(port)
    return env


def _start(checkout: Path, port: int, **env: str) -> tuple["subprocess.Popen[bytes]", IO[bytes]]:
    """bin/dev in the copy, printing to its dev.log."""
    log = (checkout / "dev.log").open("wb")
    process = subprocess.Popen(
        ["bin/dev"],
        cwd=checkout,
        env={**_environment(port), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C goes to the whole group, as in a terminal
    )
    return process, log


def test_bin_dev_runs_api_worker_and_beat_on_sqlite_and_a_folder_broker(dev_checkout):
    port = free_port()
    process, log = _start(dev_checkout, port)
    output = lambda: (dev_checkout / "dev.log").read_text(errors="replace")  # noqa: E731
    receiver = Receiver()
    try:
        wait_for(lambda: KEY_LINE.search(output()) or process.poll() is not None, timeout=120)
        assert process.poll() is None, output()
        key_line = KEY_LINE.search(output())
        assert key_line, output()
        key = key_line.group(1)
        assert key == (dev_checkout / "var" / "demo_api_key").read_text().strip()
        # The banner stays readable: every worker process sweeps every second, and neither the
        # worker nor beat writes a line per task; and kombu's warning about a missing host is
        # gone.
        time.sleep(4)
        after_banner = output().split("Ctrl-C stops everything.", 1)[1]
        assert "Sending due task" not in after_banner, after_banner[-2000:]
        assert "No hostname was supplied" not in output()
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}", "MD-Version": "2026-06-11"}

        def ready() -> bool:
            try:
                return requests.get(f"{base}/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout=60)
        created = requests.post(
            f"{base}/v1/webhook_endpoints",
            json={"url": f"{receiver.url}/dev", "enabled_events": ["judgment.created"]},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        secret = created.json()["signing_secret"]
        published = requests.post(
            f"{base}/v1/events",
            json={"type": "judgment.created", "data": {"judgment": "jdg_1"}},
            headers=headers,
            timeout=10,
        )
        assert published.status_code == 201, published.text

        wait_for(lambda: receiver.received("/dev"), timeout=60)
        delivery = receiver.received("/dev")[0]
        signature.verify(delivery.body, delivery.headers["MD-Signature"], secret)
        assert json.loads(delivery.body)["id"] == published.json()["event_id"]
        event_url = f"{base}/v1/events/{published.json()['event_id']}"

        def succeeded() -> int:
            counts = requests.get(event_url, headers=headers, timeout=10).json()["delivery_counts"]
            return int(counts["succeeded"])

        wait_for(lambda: succeeded() == 1, timeout=30)  # recorded by the worker in SQLite
        assert (dev_checkout / "var" / "kinetic.sqlite3").is_file()

        # The list's hand-written SQL (webhooks.selectors) on SQLite: pages and both cursors.
        second = requests.post(
            f"{base}/v1/webhook_endpoints",
            json={"url": f"{receiver.url}/second"},
            headers=headers,
            timeout=10,
        ).json()["webhook_endpoint_id"]
        first = created.json()["webhook_endpoint_id"]

        def page(query: str) -> tuple[list[str], bool]:
            listed = requests.get(
                f"{base}/v1/webhook_endpoints?{query}", headers=headers, timeout=10
            )
            assert listed.status_code == 200, listed.text
            ids = [endpoint["webhook_endpoint_id"] for endpoint in listed.json()["data"]]
            return ids, listed.json()["has_more"]

        assert page("limit=1") == ([second], True)
        assert page(f"limit=1&starting_after={second}") == ([first], False)
        assert page(f"limit=5&ending_before={first}") == ([second], False)

        # Delivery control on SQLite: an ordered, rate-limited endpoint gets events in order,
        # and an unordered one at 1/s gets them all, past the 5 s of slots a worker holds:
        # the rest sent back to the database, marked for the worker's refills, and claimed
        # again as they come due.
        limits: list[tuple[str, dict[str, str | int]]] = [
            ("ordered", {"delivery_order": "ordered", "rate_limit": 5}),
            ("limited", {"rate_limit": 1}),
        ]
        for path, fields in limits:
            made = requests.post(
                f"{base}/v1/webhook_endpoints",
                json={
                    "url": f"{receiver.url}/{path}",
                    "enabled_events": ["packet.created"],
                    **fields,
                },
                headers=headers,
                timeout=10,
            )
            assert made.status_code == 201, made.text

        def publish_one(i: int) -> str:
            published = requests.post(
                f"{base}/v1/events",
                json={"type": "packet.created", "data": {"i": i}},
                headers=headers,
                timeout=10,
            )
            assert published.status_code == 201, published.text
            return str(published.json()["event_id"])

        ids = [publish_one(i) for i in range(8)]
        wait_for(lambda: len(receiver.received("/ordered")) >= 8, timeout=60)
        got = [r.headers["MD-Event-Id"] for r in receiver.received("/ordered")]
        assert got == ids, output()[-3000:]
        wait_for(lambda: _received(receiver, "/limited") >= set(ids), timeout=60)
        assert "periodic job" not in output(), output()[-3000:]

        # Ctrl-C while the 1/s endpoint's next two wait in the worker for their slots: they
        # are released unsent, on SQLite too (read in its file once bin/dev has stopped).
        last = [publish_one(i) for i in range(8, 11)]
        wait_for(lambda: _received(receiver, "/limited") & set(last), timeout=30)
    finally:
        receiver.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            # A warm shutdown takes about 5 s; once in many full runs one took over 60 s, cause
            # not found. bin/dev now kills what is left after STOP_GRACE (20 s; the test below),
            # reported by the warning below; should even that not end it, the failure lists
            # what was left.
            process.wait(60)
        except subprocess.TimeoutExpired as exc:
            left = subprocess.run(
                ["ps", "-o", "pid,stat,etime,args", "--sid", str(process.pid)],
                capture_output=True,
                text=True,
            ).stdout
            tail = output()[-4000:]
            raise AssertionError(f"bin/dev still running after 60 s:\n{left}\n{tail}") from exc
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            log.close()
    killed = [line for line in output().splitlines() if "did not stop within" in line]
    if killed:  # stopped all the same; said in the run's summary so that it is looked into
        warnings.warn(f"bin/dev killed a process that did not stop: {killed}", stacklevel=1)
    assert _all_gone(process), "a process bin/dev started outlived it"
    with closing(sqlite3.connect(dev_checkout / "var" / "kinetic.sqlite3")) as db:
        pending = "SELECT count(*) FROM deliveries_delivery WHERE status = 'pending'"
        unsent = db.execute(pending).fetchone()[0]
        held = db.execute(f"{pending} AND claim_token IS NOT NULL").fetchone()[0]
    assert unsent and not held, (unsent, held)


def _received(receiver: Receiver, path: str) -> set[str]:
    return {r.headers["MD-Event-Id"] for r in receiver.received(path)}


def test_a_process_that_does_not_stop_after_ctrl_c_is_killed_after_the_grace(dev_checkout):
    """The README: a process still stopping STOP_GRACE seconds after Ctrl-C is killed. The
    worker is frozen (SIGSTOP), as a hung one would be: bin/dev kills it and says which."""
    process, log = _start(dev_checkout, free_port(), STOP_GRACE="5")
    output = lambda: (dev_checkout / "dev.log").read_text(errors="replace")  # noqa: E731
    try:
        wait_for(lambda: KEY_LINE.search(output()) or process.poll() is not None, timeout=120)
        assert process.poll() is None, output()
        worker = subprocess.run(
            ["pgrep", "-s", str(process.pid), "-f", "celery -A config worker"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(worker) == 1, worker
        os.kill(int(worker[0]), signal.SIGSTOP)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    killed = [line for line in output().splitlines() if "did not stop within" in line]
    # Beat and runserver stop within the grace, unless the machine is loaded enough to keep
    # them longer: then they are killed too, and said so.
    assert "bin/dev: the worker did not stop within 5 s; killed" in killed, output()[-3000:]
    assert all(re.fullmatch(r"bin/dev: the .+ did not stop within 5 s; killed", k) for k in killed)
    assert _all_gone(process), "the frozen worker outlived bin/dev"


def _all_gone(process: "subprocess.Popen[bytes]") -> bool:
    """Every process bin/dev started (runserver, worker, beat) is gone with it, within 15 s."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    return not _group_alive(process.pid)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
