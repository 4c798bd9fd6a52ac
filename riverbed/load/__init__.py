"""Load: staged batches from the lake into the warehouse.

Staging tables (truncate-and-load of one batch), then SCD Type 2 dimensions (``scd2``, its merge's
plan in ``scd2_plan``), then append-only facts (``facts``), on a warehouse behind one small
protocol (``warehouse``) with a DuckDB (``duckdb_warehouse``) and a PostgreSQL
(``postgres_warehouse``) implementation. ``runner`` runs the stage, ``model`` is the warehouse
model the config implies, ``ddl`` its DDL (`riverbed ddl`).
"""
