"""The lake: storage backends, Parquet files, and the lake's contract with every stage.

``storage`` (the protocol), ``local`` and ``s3`` (its implementations), ``parquet`` (files
written atomically), ``layout`` (every path: built and parsed in one place), ``schema`` (the CDC
columns), ``positions`` (LSN text), ``pgtypes`` (PostgreSQL types as Arrow types), ``reader`` (a
table's raw files as one change log), ``declared`` (raw files read as their declared types),
``lock`` (one process at a time for a piece of work). Which files are visible is the state
store's (riverbed.state: ``store.lake``). A leaf: it imports no stage.
"""
