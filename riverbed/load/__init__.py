"""Load: staged batches from the lake into the warehouse.

Staging tables (truncate-and-load of one batch), then SCD Type 2 dimensions (``scd2``), then
append-only facts (``facts``), on a warehouse behind one small protocol (``warehouse``) with a
DuckDB and a PostgreSQL implementation.
"""
