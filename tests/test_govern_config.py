"""riverbed.yaml's governance policy: each mistake is one line naming the key and the fix, the
first version's keys still work, and principals' secrets are kept only as scrypt hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from riverbed.config.loader import parse_config
from riverbed.errors import ConfigError
from riverbed.govern.credentials import Credentials
from riverbed.govern.policy import GovernError, Policy

POLICY = """
tables:
  customers: {kind: dimension, target: dim_customer, keys: [id], tracked: [region], pii: {phone: redact, full_name: mask}}
governance:
  tags: {dim_customer.email: [pii, contact]}
  roles:
    reader: {grants: [{tables: ["fact_*"]}]}
    analyst:
      inherits: [reader]
      grants:
        - tables: [dim_customer]
          columns: {exclude_tags: [contact]}
          row_filter: "region = principal.region"
          masks: {born: year_only}
    support:
      grants: [{tables: [dim_customer], columns: {include: [id, email, phone]}}]
      unmasked: [dim_customer.phone]
    legacy: {tables: ["*"], row_filter: {dim_customer: "region = 'EU'"}, unmasked: ["*.full_name"]}
  principals:
    eva: {roles: [analyst], attributes: {region: EU}}
    sam: {roles: [support]}
    old: {roles: [legacy]}
"""
COLUMNS = ["id", "full_name", "email", "phone", "region", "born"]


@pytest.mark.parametrize(
    ("section", "line"),
    [
        (
            "roles: {a: {inherits: [b]}}",
            "governance.roles.a.inherits: 'b' is not a role; defined: a",
        ),
        (
            "roles: {a: {inherits: [b]}, b: {inherits: [c]}, c: {inherits: [a]}}",
            "governance.roles.a.inherits: roles inherit in a circle (a -> b -> c -> a); "
            "remove one of these inherits",
        ),
        (
            "roles: {a: {}}\n  principals: {p: {roles: [boss]}}",
            "governance.principals.p.roles: 'boss' is not a role; defined: a",
        ),
        (
            "roles: {a: {grants: [{tables: [t], columns: {include: [x], exclude: [y]}}]}}",
            "governance.roles.a.grants.0.columns: give exactly one of include: [columns], "
            "exclude: [columns] or exclude_tags: [tags] (given: include, exclude)",
        ),
        (
            "roles: {a: {grants: [{tables: [t], masks: {x: scramble}}]}}",
            "governance.roles.a.grants.0.masks.x = 'scramble': not a mask; masks: hash, "
            "redact, show_last_4, show_first_4, null, year_only, email_domain, or {sql: ",
        ),
        (
            "principals: {p: {attributes: {region: [EU, US]}}}",
            "governance.principals.p.attributes.region: an attribute is one string, number "
            "or boolean",
        ),
        (
            "roles: {a: {grants: [{tables: [t], masks: {x: {sql: 'upper(x)'}}}]}}",
            "a custom mask must use the column as {column}",
        ),
        (
            "roles: {a: {grants: [{tables: [t], row_filter: 'region = = 1'}]}}",
            "governance.roles.a.grants.0.row_filter = 'region = = 1': not a valid SQL predicate",
        ),
        ("roles: {a: {grants: [{tables: []}]}}", 'name at least one table, or "*"'),
        ("tags: {email: [pii]}", "'email' is not table.column"),
        (
            "roles: {a: {grants: [{tables: [t], row_filter: 'region = principal.region'}]},"
            " b: {inherits: [a]}}\n  principals: {p: {roles: [b], attributes: {team: x}}}",
            "governance.principals.p.attributes: role a's row filter on t uses "
            "principal.region; give p a region",
        ),
        ("principals: {p: {password: hunter2}}", "use {env: VARIABLE} or {file: PATH}"),
    ],
)
def test_each_policy_mistake_is_one_line(section: str, line: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(f"governance:\n  {section}\n", "riverbed.yaml")
    [problem] = raised.value.problems  # one line, however the model is built
    assert line in problem, problem
    assert "hunter2" not in str(raised.value)


def policy() -> Policy:
    return Policy.from_config(parse_config(POLICY, "riverbed.yaml"))


def test_roles_inherit_and_grants_resolve_columns_masks_and_filters() -> None:
    eva = policy().principal("eva")
    assert eva.roles == ("analyst", "reader") and eva.attributes == {"region": "EU"}
    access = policy().access(eva, "dim_customer", COLUMNS)
    assert access is not None
    assert access.columns == ("id", "full_name", "phone", "region", "born")  # email: tag
    # PII defaults (mask: show_last_4, redact) besides the grant's own mask
    assert access.masks == {"full_name": "show_last_4", "phone": "redact", "born": "year_only"}
    assert access.row_filter == "region = principal.region"
    assert policy().access(eva, "fact_orders", ["id"]) is not None  # inherited
    assert policy().access(eva, "dim_product", ["id"]) is None  # default deny


def test_unmasked_and_include_lists() -> None:
    sam = policy().access(policy().principal("sam"), "dim_customer", COLUMNS)
    assert sam is not None and sam.columns == ("id", "email", "phone")
    assert sam.masks == {} and sam.row_filter is None  # phone unmasked by the role


def test_the_first_versions_keys_become_grants() -> None:
    old = policy().principal("old")
    customers = policy().access(old, "dim_customer", COLUMNS)
    assert customers is not None and customers.row_filter == "region = 'EU'"
    assert customers.masks == {"phone": "redact"}  # full_name unmasked by a glob
    anything = policy().access(old, "fact_orders", ["id"])
    assert anything is not None and anything.row_filter is None


def test_without_principals_admin_reads_everything_in_clear() -> None:
    config = parse_config(POLICY.split("governance:")[0], "riverbed.yaml")
    admin = Policy.from_config(config).principal("admin")
    access = Policy.from_config(config).access(admin, "dim_customer", COLUMNS)
    assert access is not None and access.columns == tuple(COLUMNS) and access.masks == {}
    with pytest.raises(GovernError, match="no principal named eve"):
        Policy.from_config(config).principal("eve")


def test_secrets_are_kept_as_scrypt_hashes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("tok-123\n")
    monkeypatch.setenv("EVA_PASSWORD", "correct horse")
    config = parse_config(
        "governance:\n  roles: {r: {}}\n  principals:\n"
        "    eva: {roles: [r], password: {env: EVA_PASSWORD}}\n"
        f"    bot: {{roles: [r], token: {{file: {tmp_path / 'token'}}}}}\n",
        "riverbed.yaml",
    )
    credentials = Credentials.from_config(config.governance)
    monkeypatch.delenv("EVA_PASSWORD")  # read once: the hash is what is kept
    assert credentials.check_password("eva", "correct horse")
    assert not credentials.check_password("eva", "correct horse ")
    assert not credentials.check_password("bot", "tok-123")  # bot has a token, no password
    assert credentials.check_token("bot", "tok-123") and not credentials.check_token("eva", "x")
    assert "correct horse" not in repr(vars(credentials))
    unset = parse_config(
        "governance:\n  roles: {r: {}}\n  principals: {p: {roles: [r], token: {env: NOPE_X}}}\n",
        "riverbed.yaml",
    )
    with pytest.raises(GovernError, match="governance.principals.p.token: environment variable"):
        Credentials.from_config(unset.governance)


def test_the_demo_policy_filters_and_masks_the_eu_analyst() -> None:
    from riverbed.config.loader import demo_config_text

    demo = Policy.from_config(parse_config(demo_config_text(), "riverbed.yaml"))
    columns = ["customer_key", "customer_id", "email", "full_name", "phone", "region"]
    admin = demo.access(demo.principal("admin"), "dim_customer", columns)
    assert admin is not None and admin.masks == {} and admin.row_filter is None
    analyst = demo.principal("eu_analyst")
    customers = demo.access(analyst, "dim_customer", columns)
    assert customers is not None and customers.row_filter == "region = principal.region"
    assert customers.masks == {"email": "redact", "full_name": "show_last_4", "phone": "redact"}
    orders = demo.access(analyst, "fact_orders", ["order_id", "amount_cents"])
    assert orders is not None and orders.row_filter is None and orders.masks == {}
