"""Governance, a stage of its own: the one gate every read of the warehouse by a principal
goes through, and the record of what it decided.

``policy`` resolves riverbed.yaml's ``governance:`` into what a principal may read of a table;
``gateway`` checks a principal's SQL and rewrites it to read governed derived tables only;
``masks`` builds the column masks' SQL per dialect; ``credentials`` keeps principals'
passwords and tokens as salted scrypt hashes; ``audit`` records each of the gateway's
decisions and each governance change, hash-chained in the state store; ``erasure`` takes a
data subject's personal values out of the lake and records the tombstone (`riverbed
forget`, whose warehouse part is riverbed.load.erase). Running a governed
query on the warehouse, which this stage does not open, is riverbed.serve.queries'
``query_as``.
"""
