"""Governance, a stage of its own: the access policy, the gateway every read goes through, and
the audit trail (riverbed.govern.audit) that records each of the gateway's decisions and each
governance change, hash-chained in the state store."""
