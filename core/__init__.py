"""The kernel every app stands on: ids, times, errors, logging, encryption, keyset pages.

Nothing here imports an app of this project: `accounts`, `webhooks`, `deliveries` and the
interfaces above them (`api`, `console`) import from here, never the other way round.
"""
