"""Processes the bench started, read from /proc: their trees, memory (RSS) and CPU time.

Memory and scaling figures must name which process used what, so everything here works on
pids the bench knows (a Celery worker and its children, the receiver, redis-server) or can
recognise (PostgreSQL backends by the database in their process title). Linux only, like the
rest of the bench.
"""

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str  # the kernel's short name (comm), e.g. "postgres", "redis-server"
    ticks: int  # user + system CPU time, in clock ticks


def _read_stat(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone between listing /proc and reading it
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return Proc(pid=pid, ppid=int(fields[1]), name=name, ticks=int(fields[11]) + int(fields[12]))


def snapshot() -> dict[int, Proc]:
    """Every process on the machine, by pid."""
    procs = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = _read_stat(int(entry.name))
            if proc is not None:
                procs[proc.pid] = proc
    return procs


def tree(root: int, procs: dict[int, Proc] | None = None) -> list[int]:
    """`root` and all its descendants that are alive (prefork children, for example)."""
    procs = snapshot() if procs is None else procs
    if root not in procs:
        return []
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory (VmRSS) summed over `pids`; processes that are gone count 0."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def tree_rss_bytes(roots: Iterable[int]) -> int:
    procs = snapshot()
    return rss_bytes(pid for root in roots for pid in tree(root, procs))


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def postgres_backends(database: str, procs: dict[int, Proc]) -> list[int]:
    """Backends connected to `database`: their title reads
    `postgres: [cluster: ]user database host(port) activity`."""
    return [
        p.pid
        for p in procs.values()
        if p.name == "postgres" and database in _title(p.pid).split()[2:5]
    ]


def postgres_server(procs: dict[int, Proc]) -> list[int]:
    """PostgreSQL's own processes (postmaster, WAL writer, checkpointer, background writer,
    autovacuum): shared with every other database on the server."""
    own = []
    for p in procs.values():
        if p.name != "postgres":
            continue
        title = _title(p.pid)
        if "(" not in title and "[local]" not in title:  # backends name their client host
            own.append(p.pid)
    return own


def machine_busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


# A group is a name and how to find its pids in a snapshot (pids may come and go mid-window).
GroupFinder = Callable[[dict[int, Proc]], Iterable[int]]


@dataclass
class CpuUsage:
    """CPU used during a window, in cores (1.0 = one CPU busy the whole time)."""

    seconds: float
    cpus: int
    machine: float  # every process on the machine
    groups: dict[str, float] = field(default_factory=dict)
    # The busiest single process of each group: a Python process tops out near 1.0 (the GIL).
    busiest: dict[str, float] = field(default_factory=dict)

    @property
    def others(self) -> float:
        """Everything outside the groups: other people's processes on a shared machine."""
        return max(0.0, self.machine - sum(self.groups.values()))

    def as_dict(self, busiest: bool = True) -> dict[str, float]:
        out = {"seconds": round(self.seconds, 2), "machine_cores": round(self.machine, 3)}
        for name, cores in self.groups.items():
            out[f"{name}_cores"] = round(cores, 3)
            if busiest:
                out[f"{name}_busiest_process_cores"] = round(self.busiest.get(name, 0.0), 3)
        out["others_cores"] = round(self.others, 3)
        return out


class CpuSampler:
    """Samples CPU time per group of processes from /proc every `interval` seconds, in a thread.

    Per process, the time counted is its last sample minus its first: a process that started
    inside the window loses at most one interval, one that ended keeps what it used until its
    last sample. Used as a context manager; `usage` is set on exit.
    """

    def __init__(self, groups: dict[str, GroupFinder], interval: float = 0.5) -> None:
        self.groups = groups
        self.interval = interval
        self.usage: CpuUsage | None = None
        self._first: dict[tuple[str, int], int] = {}
        self._last: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        procs = snapshot()
        for name, finder in self.groups.items():
            for pid in finder(procs):
                proc = procs.get(pid)
                if proc is not None:
                    self._first.setdefault((name, pid), proc.ticks)
                    self._last[(name, pid)] = proc.ticks

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "CpuSampler":
        self._started = time.monotonic()
        self._busy = machine_busy_ticks()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        seconds = max(time.monotonic() - self._started, 1e-6)
        per_process: dict[str, list[float]] = {name: [] for name in self.groups}
        for key, last in self._last.items():
            per_process[key[0]].append((last - self._first[key]) / TICKS_PER_S / seconds)
        self.usage = CpuUsage(
            seconds=seconds,
            cpus=len(os.sched_getaffinity(0)),
            machine=(machine_busy_ticks() - self._busy) / TICKS_PER_S / seconds,
            groups={name: sum(values) for name, values in per_process.items()},
            busiest={name: max(values, default=0.0) for name, values in per_process.items()},
        )


def pids_of(*pids: int, children: bool = True) -> GroupFinder:
    """A group of fixed processes, and their descendants unless `children` is False."""

    def find(procs: dict[int, Proc]) -> Iterator[int]:
        for pid in pids:
            yield from tree(pid, procs) if children else [pid]

    return find
