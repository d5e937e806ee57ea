"""The kernel every app stands on: ids, times, errors, logging, encryption, keyset pages, SQL
rows (sql), transaction locks (locks), request rate limits (rate_limits), tracing.

Nothing here imports an app of this project: `accounts`, `webhooks`, `deliveries` and the
interfaces above them (`api`, `console`, `portal`) import from here, never the other way round.
"""
