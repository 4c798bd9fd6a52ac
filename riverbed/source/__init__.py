"""The source PostgreSQL: the embedded server Riverbed manages, or an external one by DSN.

``connection`` (how every command reaches the source), ``embedded`` (the embedded PostgreSQL 18),
``catalog`` (what a source schema declares: keys, foreign keys, enums, constraints), ``secret``
(the embedded server's password and pg_hba.conf).
"""
