"""The lake: storage backends, Parquet files and the manifest that every stage shares.

``storage`` (the protocol), ``local`` and ``s3`` (its implementations), ``parquet`` (files
written atomically), ``manifest`` (the state store: which files exist, how far capture got),
``batches`` (the transform's batch records, read and withdrawn by the other stages), ``reader``
(a table's raw files as one change log), ``declared`` (raw files read as their declared types),
``lock`` (one process at a time for a piece of work). A leaf: it imports no stage.
"""
