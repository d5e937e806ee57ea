"""Benchmarks of the Kinetic webhooks service: `python -m bench` from the repository root.

See `bench/__main__.py` for the command line and `docs/benchmarks.md` for the latest figures.
"""
