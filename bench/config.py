"""Where the bench runs: its database, and the guard that keeps it off every other database.

The bench owns exactly one database, `kinetic_bench` (override with BENCH_DATABASE_URL, whose
name must still start with `kinetic_bench`). It creates it fresh, migrates it, and drops it at
the end; it never connects to `kinetic` or `test_kinetic*`.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import environ

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DB_NAME = "kinetic_bench"
DEFAULT_DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{BENCH_DB_NAME}"
SETTINGS_MODULE = "bench.settings"

# Workload names, known before Django starts: the delivery ones need the private broker, which
# must be in the environment before Django reads its settings. `peer` runs django-webhook in
# its own virtualenv; `gunicorn` (comparing worker setups) runs only when asked for.
DELIVERY_WORKLOADS = ("deliveries", "latency", "fanout", "slow", "memory")
DEFAULT_WORKLOADS = ("api", "deep", *DELIVERY_WORKLOADS, "peer")
ALL_WORKLOADS = (*DEFAULT_WORKLOADS, "gunicorn")


class BenchError(RuntimeError):
    """Something the bench cannot work around; the message says what to do."""


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL


def database_config() -> dict[str, Any]:
    """Django's DATABASES entry for the bench database, after checking its name."""
    config = environ.Env.db_url_config(database_url())
    check_database_name(config["NAME"])
    if config["ENGINE"] != "django.db.backends.postgresql":
        raise BenchError("BENCH_DATABASE_URL must be a postgres:// URL.")
    return config


def check_database_name(name: str) -> None:
    if not name.startswith(BENCH_DB_NAME) or name.startswith("test_"):
        raise BenchError(
            f"refusing to use database {name!r}: the bench only creates, migrates and drops "
            f"databases named {BENCH_DB_NAME}*"
        )


def add_docs_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """`--docs` / `--no-docs` (`args.docs`: True, False, or None for the command's default)."""
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None)
    docs.add_argument("--no-docs", dest="docs", action="store_false", help=f"(do not) {what}")


def command_line(module: str, argv: list[str] | None) -> str:
    """How this run was asked for, as a shell would take it: `python -m <module> <args>`."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
