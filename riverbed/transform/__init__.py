"""The transform stage: raw CDC files -> quality rules + SQL transforms -> staged batches.

``runner`` (one transform run, exactly once), ``bookmarks`` (batches planned from the raw files
no batch consumed, and committed through the state store's ``transform``), ``rules`` (quality
rules compiled to SQL, one module per rule family), ``read``/``flag``/``write``/``reprocess``
(the steps of a batch), ``pii`` (the keyed-HMAC PII hook), ``engine`` (the
engine protocol) with ``duckdb_engine`` and ``spark_engine``, ``current`` (the current rows
rules read) kept few files by ``compacted``.
"""
