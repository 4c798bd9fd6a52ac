"""The transform stage: raw CDC files -> quality rules + SQL transforms -> staged batches.

``runner`` (one transform run, exactly once), ``bookmarks`` (which raw files each table consumed),
``rules`` (quality rules compiled to SQL), ``pii`` (the keyed-HMAC PII hook), ``engine`` (the
engine protocol) with ``duckdb_engine`` and ``spark_engine``.
"""
