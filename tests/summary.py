"""Lines a test module adds to the end of the run's report, under pytest-xdist as without it.

A module's own print at its end goes to its xdist worker's output, which nobody sees: the lines
are kept in the run's stash instead, sent from each worker to the controller with its results
(tests/conftest.py's hooks), and printed there as a section of the terminal summary.
"""

import pytest

LINES = pytest.StashKey[list[str]]()


def add(config: pytest.Config, lines: list[str]) -> None:
    """Prints `lines` in the run's summary."""
    config.stash.setdefault(LINES, []).extend(lines)


def lines(config: pytest.Config) -> list[str]:
    return config.stash.get(LINES, [])
