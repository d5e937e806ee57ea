"""The peer's own virtualenv: django-webhook never goes into the project's .venv or its pins.

Built under var/bench/peer-venv from requirements.txt beside this file, and rebuilt from scratch
(not upgraded in place, so nothing stale stays) when that file's hash no longer matches the
stamp left by the last build, as bin/_venv.sh does for the project's own.
"""

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from bench.config import REPO_ROOT, BenchError

VENV = REPO_ROOT / "var" / "bench" / "peer-venv"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def peer_python() -> Path:
    """The peer virtualenv's python, after (re)building the virtualenv if its pins changed."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    python = VENV / "bin" / "python"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    # Two bench runs at once would otherwise build into the same directory.
    with (VENV.parent / "peer-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and python.exists():
            return python
        if VENV.exists():
            shutil.rmtree(VENV)
        print(f"Building the peer virtualenv in {VENV} from {REQUIREMENTS.name}…", file=sys.stderr)
        _run([sys.executable, "-m", "venv", str(VENV)])
        _run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(REQUIREMENTS)]
        )  # fmt: skip
        stamp.touch()
    return python


def pinned_version(package: str) -> str:
    """The version requirements.txt pins `package` to."""
    for line in REQUIREMENTS.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package.lower():
            return version.strip()
    raise BenchError(f"{package} is not pinned in {REQUIREMENTS}")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(
            f"building the peer virtualenv failed ({' '.join(command[:4])}…):\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
