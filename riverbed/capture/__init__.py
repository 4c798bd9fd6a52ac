"""Capture: a consistent snapshot plus logical replication (pgoutput) from PostgreSQL into the lake."""
