"""The demo shop: the OLTP source the demo captures from.

``schema`` (its tables), ``catalog`` (the reference data it is made of), ``history`` (months of
history generated from one seed), ``seed`` (loaded through COPY), ``workload`` (live traffic),
``summary`` (what is in it, in a dashboard's terms).
"""
