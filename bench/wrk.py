"""The load generator: wrk, run with `--latency`, its report parsed into numbers."""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.config import BenchError

LUA_DIR = Path(__file__).resolve().parent / "lua"
POST_JSON_SCRIPT = LUA_DIR / "post_json.lua"

INSTALL_HINT = (
    "wrk is not installed. It is the bench's load generator; install it with\n"
    "    apt-get update && apt-get install -y wrk\n"
    "(Debian/Ubuntu package `wrk`; on macOS `brew install wrk`), then run the bench again."
)

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


class WrkMissing(BenchError):
    pass


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(INSTALL_HINT)
    return path


def wrk_version() -> str:
    result = subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True)
    line = (result.stdout or result.stderr).strip().splitlines()
    return line[0].split(" Copyright")[0].strip() if line else "wrk (unknown version)"


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    seconds: float
    errors: int  # HTTP status >= 400 plus socket errors
    raw: str


@dataclass(frozen=True)
class Load:
    """How hard wrk pushes: the same for every workload of a run."""

    connections: int = 8
    threads: int = 1
    timeout_s: int = 5


def run(
    url: str,
    *,
    seconds: float,
    load: Load,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> WrkResult:
    """wrk against one URL; with `body`, every request is a POST of that JSON body."""
    argv = [
        wrk_binary(),
        "--latency",
        "-t",
        str(load.threads),
        "-c",
        str(load.connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        f"{load.timeout_s}s",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    env = dict(os.environ)
    if body is not None:
        argv += ["-s", str(POST_JSON_SCRIPT)]
        env["BENCH_WRK_BODY"] = body
    argv.append(url)
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}) on {url}:\n{result.stderr}")
    return parse(result.stdout)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse(output: str) -> WrkResult:
    """Numbers from wrk's `--latency` report; raises if the report lacks one."""
    percentiles = {
        int(m[1]): _ms(m[2], m[3])
        for m in re.finditer(rf"^\s*(50|75|90|99)%\s+{_TIME}\s*$", output, re.MULTILINE)
    }
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(rf"^\s*(\d+) requests in {_TIME}", output, re.MULTILINE)
    if rps is None or total is None or set(percentiles) != {50, 75, 90, 99}:
        raise BenchError(f"could not read wrk's report:\n{output}")
    errors = 0
    status = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if status:
        errors += int(status[1])
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(
        rps=float(rps[1]),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        requests=int(total[1]),
        seconds=_ms(total[2], total[3]) / 1000,
        errors=errors,
        raw=output,
    )
