"""Gunicorn settings for the container image (`gunicorn --config gunicorn.conf.py config.wsgi`).

Only PORT and WEB_CONCURRENCY are read here, the names platforms conventionally set. Anything
else can be overridden without a rebuild through GUNICORN_CMD_ARGS (e.g. "--threads 8"), which
gunicorn applies after this file.
"""

import os


def _cores() -> int:
    # The CPUs this process may run on (respects --cpuset-cpus), not every core of the host.
    # A CPU quota (--cpus) is invisible here, hence the cap below.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


bind = f"0.0.0.0:{os.environ.get('PORT') or '8000'}"

# 2 x cores + 1 is gunicorn's rule of thumb. Capped because every worker is a whole Django
# process with its own memory and database connections, and a container on a large host would
# otherwise claim all of the host's cores.
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * _cores() + 1, 8))

# Sync workers: measured with bench/ on 2 cores, they served the API and a bare view faster
# than gthread (which also balanced keep-alive connections badly between workers). Each worker
# keeps one database connection (CONN_MAX_AGE).
worker_class = "sync"

# A worker that stops reporting for this long is killed and replaced.
timeout = 30
# Shorter than the stop grace period in docker-compose.yml (30s), so in-flight requests finish
# before SIGKILL arrives.
graceful_timeout = 25

# Recycling workers bounds the damage of a slow memory leak; the jitter keeps them from all
# restarting at the same moment. Not often: a new worker spends ~0.6 s of CPU starting (1,000
# requests cost a worker restart every second or two at the bench's rate, ~0.5 ms a request),
# and `python -m bench` measures web RSS flat over 10x the requests.
max_requests = 50_000
max_requests_jitter = 5_000

# Containers log to stdout/stderr; the platform collects them.
accesslog = "-"
errorlog = "-"

# The worker heartbeat touches a file every second; on a container's overlay filesystem that
# write can stall and get healthy workers killed. /dev/shm is memory-backed (and gunicorn
# creates the file with mkstemp and unlinks it at once, so a shared directory is safe).
_SHM = "/dev/shm"  # noqa: S108
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM


def child_exit(server: object, worker: object) -> None:
    """Prometheus multiprocess mode: a dead worker's live gauges must not be reported."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
