"""The source PostgreSQL: the embedded server Riverbed manages, or an external one by DSN."""
