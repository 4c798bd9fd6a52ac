"""Riverbed: an operational PostgreSQL database into a governed, analytics-ready warehouse."""

__version__ = "0.1.0"
