"""How much of the machine went to processes other than the bench's during a measurement.

The bench shares its CPUs with whatever else runs (other test suites, builds). Busy time from
/proc/stat minus the time of the bench's own processes (this process and the wrk it ran,
gunicorn's process group, the PostgreSQL backends connected to the bench database) is what
others used. A measurement taken while others used a large share is noisy; the workloads
repeat it, and the report shows the share for every figure.
"""

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _process_stat(pid: int) -> tuple[int, int] | None:
    """(process group, user + system ticks) of one process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[2]), int(fields[11]) + int(fields[12])


def _group_ticks(pgid: int) -> int:
    total = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _process_stat(int(entry.name))
            if stat is not None and stat[0] == pgid:
                total += stat[1]
    return total


def _children_ticks() -> int:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * _TICKS)


def _self_ticks() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * _TICKS)


@dataclass(frozen=True)
class _Sample:
    at: float
    busy: int
    ours: dict[str, int]


@dataclass(frozen=True)
class CpuShare:
    """Average CPUs in use during the window: by the bench, and by everything else."""

    ours: float
    others: float
    cpus: int

    @property
    def others_percent(self) -> float:
        return 100.0 * self.others / self.cpus


class CpuMeter:
    """`start()` before a measurement, `stop()` after; `pg_pids` are the bench's backends."""

    def __init__(self, gunicorn_pgid: int, pg_pids: Iterable[int]) -> None:
        self.gunicorn_pgid = gunicorn_pgid
        self.pg_pids = list(pg_pids)
        self.cpus = len(os.sched_getaffinity(0))
        self._start: _Sample | None = None

    def _sample(self) -> _Sample:
        postgres = 0
        for pid in self.pg_pids:
            stat = _process_stat(pid)
            postgres += stat[1] if stat else 0
        return _Sample(
            at=time.monotonic(),
            busy=_machine_busy_ticks(),
            ours={
                "self": _self_ticks(),
                "children": _children_ticks(),  # wrk, once it has been waited for
                "gunicorn": _group_ticks(self.gunicorn_pgid),
                "postgres": postgres,
            },
        )

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> CpuShare:
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        end, start = self._sample(), self._start
        seconds = max(end.at - start.at, 1e-6)
        # A backend that exited in the window lost its ticks: they count as others' (rare).
        ours = sum(max(0, end.ours[k] - start.ours[k]) for k in end.ours) / _TICKS / seconds
        busy = (end.busy - start.busy) / _TICKS / seconds
        return CpuShare(ours=ours, others=max(0.0, busy - ours), cpus=self.cpus)


def _all_process_ticks() -> dict[int, tuple[str, int]]:
    ticks: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        ticks[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return ticks


def others_busy(seconds: float = 1.0) -> tuple[float, str]:
    """Share (0-100) of the machine busy over `seconds` while the bench itself is idle, and
    the busiest processes by name."""
    cpus = len(os.sched_getaffinity(0))
    me = os.getpid()
    start_busy, start_procs = _machine_busy_ticks(), _all_process_ticks()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    end_busy, end_procs = _machine_busy_ticks(), _all_process_ticks()
    used: dict[str, int] = {}
    for pid, (name, ticks) in end_procs.items():
        if pid != me and pid in start_procs:
            used[name] = used.get(name, 0) + ticks - start_procs[pid][1]
    mine = end_procs.get(me, ("", 0))[1] - start_procs.get(me, ("", 0))[1]
    share = max(0.0, 100.0 * ((end_busy - start_busy) - mine) / _TICKS / elapsed / cpus)
    top = sorted(((t, n) for n, t in used.items() if t > 0), reverse=True)[:3]
    names = ", ".join(f"{n} {100.0 * t / _TICKS / elapsed / cpus:.0f}%" for t, n in top)
    return share, names


def wait_for_quiet(threshold_percent: float, max_wait_s: float) -> float:
    """Waits (up to `max_wait_s`) until other processes use at most the threshold; returns
    the last share seen."""
    deadline = time.monotonic() + max_wait_s
    share, _ = others_busy()
    while share > threshold_percent and time.monotonic() < deadline:
        share, names = others_busy(2.0)
        print(f"  waiting: other processes use {share:.0f}% of the CPUs ({names})", flush=True)
    return share
