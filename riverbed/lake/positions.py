"""Positions in the source's write-ahead log: the LSN every stage records and compares.

An LSN is a 64-bit integer everywhere inside Riverbed (the manifest, bookmarks, Parquet `_lsn`
columns); PostgreSQL prints it as two hexadecimal halves, `16/B374D848`. These two functions are
the only place that converts between the two forms.
"""

from __future__ import annotations


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL prints it: 16/B374D848."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """An LSN printed by PostgreSQL (16/B374D848) as the integer Riverbed stores."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)
