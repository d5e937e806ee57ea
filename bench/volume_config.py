"""What every part of bench.volume shares: its sizes and rates, and how it sizes a table
(a partitioned one with its partitions). No imports, so each part can take it."""

REQUESTS = 15  # per API and admin figure and round, after WARMUP_REQUESTS; the median
WARMUP_REQUESTS = 3
QUERY_REPETITIONS = 15  # the sweep and the claim, per round
THROUGHPUT_EVENTS = 1000  # x 10 endpoints
LATENCY_EVENTS = 250  # x 10 endpoints, at bench.deliveries.LATENCY_RATE
PAGE_LIMIT = 100
DUE_ROWS = 100  # made due (and rolled back) for each sweep and claim timed
FULL_RATE = 1000.0  # deliveries/s: the rate the day is written at

# A table's bytes: total, heap and indexes, a partitioned one summed over its partitions.
TABLE_SIZE_SQL = """
SELECT sum(pg_total_relation_size(relid)), sum(pg_relation_size(relid)),
       sum(pg_indexes_size(relid))
FROM (SELECT %s::regclass AS relid UNION SELECT relid FROM pg_partition_tree(%s)) tree
"""
