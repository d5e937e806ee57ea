"""The peer run of the delivery bench (issue 7): `python -m bench.peer [--quick]`.

`run_peer(quick)` is imported lazily from bench.peer.run: this package is also on the peer
virtualenv's path (its Django project is bench.peer.site), where our dependencies are not.
"""


def run_peer(quick: bool) -> dict[str, float]:
    """django-webhook's deliveries per second on our throughput workload (see bench.peer.run)."""
    from bench.peer.run import run_peer as run

    return run(quick)
