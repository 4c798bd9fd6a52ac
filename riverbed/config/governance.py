"""riverbed.yaml's ``governance:`` section: roles (the warehouse tables each may read, row
filters, the PII columns it sees in clear), the principals holding them, and the key PII is
hashed and tokenised with.
"""

from __future__ import annotations

from riverbed.config.fields import Model, Secret

# --- governance ------------------------------------------------------


class RoleConfig(Model):
    tables: list[str] = []  # warehouse tables this role may read; "*" for all
    row_filter: dict[str, str] = {}  # table: SQL predicate
    unmasked: list[str] = []  # table.column PII this role sees in clear


class PrincipalConfig(Model):
    roles: list[str] = []


class GovernanceConfig(Model):
    roles: dict[str, RoleConfig] = {}
    principals: dict[str, PrincipalConfig] = {}
    pii_key: Secret | None = None  # HMAC key for hashing/tokenising PII
