"""What every part of bench.volume shares: its sizes and rates, and how it sizes a table
(a partitioned one with its partitions). No imports, so each part can take it."""

REQUESTS = 15  # per API and admin figure and round, after WARMUP_REQUESTS; the median
WARMUP_REQUESTS = 3
QUERY_REPETITIONS = 15  # the sweep and the claim, per round
THROUGHPUT_EVENTS = 1000  # x 10 endpoints
# Publish-to-receipt: LATENCY_EVENTS x 10 endpoints at LATENCY_RATE events/s. Half the rate of
# bench.deliveries' latency run: 500 deliveries/s is this machine's whole capacity on a slow
# minute (480-770/s), where one stall's queue decided the p99 (docs/volume.md); at 250/s the
# figure is the path's, not the queue's. 40 s of it, so that the p99 is the 100th-worst of
# 10,000, not the 25th of 2,500.
LATENCY_EVENTS = 1000
LATENCY_RATE = 25.0
PAGE_LIMIT = 100
DUE_ROWS = 100  # made due (and rolled back) for each sweep and claim timed
FULL_RATE = 1000.0  # deliveries/s: the rate the day is written at

# A table's bytes: total, heap and indexes, a partitioned one summed over its partitions.
TABLE_SIZE_SQL = """
SELECT sum(pg_total_relation_size(relid)), sum(pg_relation_size(relid)),
       sum(pg_indexes_size(relid))
FROM (SELECT %s::regclass AS relid UNION SELECT relid FROM pg_partition_tree(%s)) tree
"""
