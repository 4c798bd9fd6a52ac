"""Capture: a consistent snapshot plus logical replication (pgoutput) from PostgreSQL into the lake.

``runner`` (`riverbed capture`: slot and publication, the snapshot once, then the stream),
``plan`` (how a capture starts: resume, snapshot afresh, or refuse), ``slot`` (the publication
and replication slot Riverbed owns), ``snapshot`` (the initial copy), ``stream`` (changes from
the slot into the lake, exactly once), ``batch`` (the stream's batch not in the lake yet, and
writing it as raw files), ``pgoutput`` and ``tuples``
(decoding the protocol), ``changes``
(decoded changes buffered into Arrow tables), ``lag`` (how far the lake is behind, measured
from the source), ``reconnect`` (a follower outliving its connection), ``privileges`` (what
the capture role lacks, asked before the setup) and ``grants`` (the SQL that gives a capture
role the least it needs, for `riverbed source grants`). Positions and files are
recorded in the state store (``store.capture``, ``store.lake``).
"""
