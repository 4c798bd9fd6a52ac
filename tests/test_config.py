"""riverbed.yaml: every kind of mistake gives one clear line and exit 2; secrets stay secret."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, write_config
from riverbed.config import demo_config_text, load_project, parse_config
from riverbed.config.fields import SecretRef
from riverbed.errors import ConfigError

TABLE = "tables:\n  t: {kind: fact, target: fact_t, keys: [id]}\n"

# (config text, a fragment the single error line must contain)
MISTAKES = [
    ("lake:\n  pathh: x\n", "lake.pathh: unknown key; allowed here: path, endpoint_url"),
    (  # a key misplaced inside a list of models: the keys of that list's items
        "governance:\n  roles:\n    r: {grants: [{tables: [t]}, {tables: [t], exclude_tags: [pii]}]}\n",
        "governance.roles.r.grants.1.exclude_tags: unknown key; allowed here: tables, columns,",
    ),
    (
        "warehouse: {engine: redshift}\n",
        "warehouse.engine = 'redshift': Input should be 'duckdb' or 'postgres'",
    ),
    ("lake: {max_rows: -5}\n", "lake.max_rows = -5: Input should be greater than or equal to 1"),
    (
        "tables:\n  t: {kind: facts, target: x, keys: [id]}\n",
        "tables.t.kind = 'facts': Input should be 'dimension' or 'fact'",
    ),
    ("tables:\n  t: {kind: fact, target: x}\n", "tables.t.keys: required but missing"),
    (
        "tables:\n  t: {kind: dimension, target: x, keys: [id]}\n",
        "tables.t: a dimension needs tracked",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: regex, column: a}]}\n",
        "tables.t.quality.0: rule type regex needs pattern",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: nonsense}]}\n",
        "tables.t.quality.0.type = 'nonsense': Input should be 'not_null'",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: not_null, column: a, action: drop}]}\n",
        "tables.t.quality.0.action = 'drop': Input should be 'quarantine', 'warn' or 'fail'",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], pii: {email: sha1}}\n",
        "tables.t.pii.email = 'sha1': Input should be 'hash', 'tokenize', 'mask' or 'redact'",
    ),
    ("lake: {path: s3://Bad_Bucket}\n", "lake: path must look like s3://bucket/prefix"),
    ("source: {slot: 'my slot'}\n", "source.slot = 'my slot': must be a plain identifier"),
    ("orchestration: {cron: '* *'}\n", "orchestration.cron = '* *': cron needs five fields"),
    ("notifiers: {n: {type: webhook}}\n", "notifiers.n: a webhook notifier needs url"),
    (
        "alarms: {a: {metric: runs_failed, threshold: 1, notify: [pager]}}\n",
        "alarms.a.notify: 'pager' is not a notifier; defined: none",
    ),
    (
        "alarms: {x: {metric: capture_lag_secs, threshold: 1, period_seconds: 60}}\n",
        "alarms.x.metric: 'capture_lag_secs' is not a metric Riverbed records; did you mean "
        "capture_lag_seconds",
    ),
    (
        "alarms: {x: {metric: nosuch_metric, threshold: 1, period_seconds: 60}}\n",
        "alarms.x.metric: 'nosuch_metric' is not a metric Riverbed records; metrics: ",
    ),
    (
        "governance: {principals: {bob: {roles: [boss]}}}\n",
        "governance.principals.bob.roles: 'boss' is not a role; defined: none",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: row_count, min: 1, action: quarantine}]}\n",
        "tables.t.quality.0: rule type row_count judges the whole batch, so it cannot quarantine",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: sql_row, sql: 'a >>> b'}]}\n",
        "tables.t.quality.0: not valid SQL",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], transforms: {amount: 'q * * p'}}\n",
        "tables.t.transforms: amount: not valid SQL",
    ),
    (
        "transform: {engine: flink}\n",
        "transform.engine = 'flink': Input should be 'duckdb' or 'spark'",
    ),
    (
        "tables:\n  t: {kind: dimension, target: x, keys: [id], tracked: [a], versions: each}\n",
        "tables.t.versions = 'each': Input should be 'per_transaction' or 'per_change'",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], versions: per_change}\n",
        "tables.t: versions applies to dimensions only",
    ),
    ("warehouse: {engine: postgres}\n", "warehouse: engine postgres needs dsn"),
    ("source:\n  dsn: [unclosed\n", "not valid YAML"),
    (
        "tables:\n  orders: {kind: fact, target: x, keys: [id], quality: "
        "[{type: references, column: customer_id, reference: custmers.customer_id}]}\n",
        "tables.orders.quality.0.reference = 'custmers.customer_id': table 'custmers' is not "
        "in tables; defined: orders",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: "
        "[{type: not_null, column: a}, {type: not_null, column: a, action: fail}]}\n",
        "tables.t: quality.0 and quality.1 are both named 'not_null(a)'; give one of them "
        "its own name",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: sql_row, "
        "name: ok, sql: 'a > 0'}, {type: not_null, column: b, name: ok}]}\n",
        "quality.0 and quality.1 are both named 'ok'",
    ),
    (
        "orchestration: {cron: '61 * * * *'}\n",
        "orchestration.cron = '61 * * * *': cron field 'minute': 61 is outside 0-59",
    ),
    (
        "orchestration: {cron: '0 0 31 feb *'}\n",
        "orchestration.cron = '0 0 31 feb *': cron expression '0 0 31 feb *' never runs",
    ),
    (
        "orchestration: {cron: '*/5 * * * *', every_seconds: 60}\n",
        "orchestration: every_seconds and cron are both set",
    ),
    ("state: {engine: postgres}\n", "state: engine postgres needs dsn"),
    (
        "state: {dsn: 'host=db dbname=state'}\n",
        "state: dsn is for engine postgres; set engine: postgres, or remove dsn",
    ),
    (
        "state: {engine: postgres, dsn: 'host=db dbname=state', path: s.db}\n",
        "state: path is for engine sqlite (a local file); engine postgres keeps the state in "
        "schema",
    ),
    (
        "state: {engine: postgres, dsn: 'host=db dbname=state', schema: Riverbed-State}\n",
        "state.schema = 'Riverbed-State': must be a PostgreSQL schema name in lower case",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: "
        "[{type: range, column: q, min: 10, max: 1}]}\n",
        "tables.t.quality.0: min 10 is greater than max 1",
    ),
    (
        "tables:\n  orders: {kind: fact, target: x, keys: [id], quality: [{type: sql_row, "
        "sql: 'id IN (SELECT order_id FROM order_itemz)'}]}\n"
        "  order_items: {kind: fact, target: y, keys: [id]}\n",
        "tables.orders.quality.0.sql: table 'order_itemz' is not in tables (did you mean "
        "order_items?); defined: orders, order_items",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: sql_dataset, "
        "sql: 'WITH c AS (SELECT 1) SELECT * FROM t, c, shop.t'}]}\n",
        "tables.t.quality.0.sql: table 'shop.t' is not in tables",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: "
        "[{type: range, column: q, min: .nan}]}\n",
        "tables.t.quality.0.min = nan: must be a finite number (NaN would pass",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: "
        "[{type: range, column: q, min: 0, max: .NaN}]}\n",
        "tables.t.quality.0.max = nan: must be a finite number",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: "
        "[{type: range, column: q, max: .inf}]}\n",
        "tables.t.quality.0.max = inf: must be a finite number",
    ),
    (
        "tables:\n  t:\n    kind: fact\n    target: x\n    keys: [id]\n"
        "    quality: [{type: not_null, column: a}]\n"
        "    quality: [{type: not_null, column: b}]\n",
        "line 7, column 5: not valid YAML: key 'quality' appears twice in one mapping "
        "(first on line 6)",
    ),
    ("- just\n- a list\n", "the top level must be a mapping"),
    *(
        (
            f"tables:\n  t: {{kind: fact, target: x, keys: [id], quality: [{rule}]}}\n",
            f"tables.t.quality.0{problem}",
        )
        for rule, problem in [
            (
                "{type: not_accepted_values, column: c}",
                ": rule type not_accepted_values needs values",
            ),
            (
                "{type: not_accepted_values, column: c, values: []}",
                ": rule type not_accepted_values needs at least one value in values",
            ),
            (
                "{type: not_accepted_values, column: c, values: [x, null]}",
                ": values: null cannot be refused here, NULL passes every rule but not_null",
            ),
            ("{type: not_equal, column: q}", ": rule type not_equal needs value"),
            ("{type: not_equal, column: q, value: [0, 1]}", ": value must be one number"),
            (
                "{type: range, column: q, min: 1, value: 0}",
                ": value applies to rule type not_equal",
            ),
            (
                "{type: range, column: q, max: 1, exclusive_min: true}",
                ": exclusive_min needs min: the bound it makes strict",
            ),
            (
                "{type: length, column: q, max: 1, exclusive_max: true}",
                ": exclusive_max applies to rule type range only",
            ),
            (
                "{type: range, column: q, min: 1, max: 1, exclusive_max: true}",
                ": min and max are both 1 and one is exclusive, so no value can pass",
            ),
            (
                "{type: range, column: q, min: 1, exclusive_min: maybe}",
                ".exclusive_min = 'maybe': Input should be a valid boolean",
            ),
            ("{type: expression}", ": rule type expression needs sql"),
            ("{type: expression, sql: 'q >>> 0'}", ": not valid SQL"),
            ("{type: expression, sql: 'q >'}", ": not valid SQL"),
        ]
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: expression, "
        "sql: 'id IN (SELECT id FROM tt)'}]}\n",
        "tables.t.quality.0.sql: table 'tt' is not in tables",
    ),
    ("logs: {level: loud}\n", "logs.level = 'loud': Input should be 'debug', 'info', 'warning'"),
    ("logs: {path: logs/}\n", "logs.path = 'logs/': must name a file, not a folder"),
    ("logs: {file: x.jsonl}\n", "logs.file: unknown key; allowed here: path, level"),
    (
        "dashboards: {seller_buckets: {high: 0.05, medium: 0.15}}\n",
        "dashboards.seller_buckets: medium (0.15) must not be above high (0.05)",
    ),
    (
        "dashboards: {seller_buckets: {high: 1.5}}\n",
        "dashboards.seller_buckets: high = 1.5: must be between 0 and 1",
    ),
    (
        "dashboards: {seller_buckets: {method: median}}\n",
        "dashboards.seller_buckets.method = 'median': Input should be 'thresholds' or 'quantiles'",
    ),
    (
        "dashboards: {spending_buckets: [100, 50]}\n",
        "dashboards.spending_buckets: [100.0, 50.0]: edges must be positive and strictly",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], current_view: 'x now'}\n",
        "tables.t.current_view: 'x now' must be a plain identifier",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id]}\n"
        "  u: {kind: fact, target: x_current, keys: [id], current_view: u_now}\n",
        "tables.t.current_view: 'x_current' is the target of tables.u",
    ),
    (
        "tables:\n  t: {kind: dimension, target: x, keys: [id], tracked: [a], current_view: v}\n",
        "tables.t: current_view applies to facts only",
    ),
    (
        "tables:\n  t: {kind: dimension, target: x, keys: [id], tracked: [a], event_time: ts}\n",
        "tables.t: event_time applies to facts only",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], effective_from: ts}\n",
        "tables.t: effective_from applies to dimensions only",
    ),
    (
        "tables:\n  t: {kind: fact, target: x, keys: [id], event_time: 'ts + 1'}\n",
        "tables.t: event_time must name one column (letters, digits, _), not 'ts + 1'",
    ),
    (
        "tables:\n  t: {kind: dimension, target: x, keys: [id], tracked: [a], "
        "effective_from: 'coalesce(a, b)'}\n",
        "tables.t: effective_from must name one column (letters, digits, _), not 'coalesce(a, b)'",
    ),
    (
        "tables:\n  t: {kind: dimension, target: x, keys: [id], tracked: [a], "
        "effective_from: [a, b]}\n",
        "tables.t.effective_from: Input should be a valid string",
    ),
]


@pytest.mark.parametrize("text,expected", MISTAKES, ids=[m[1][:40] for m in MISTAKES])
def test_each_mistake_gives_its_one_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "riverbed.yaml")
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith("riverbed.yaml")
    assert expected in caught.value.problems[0]


def test_custom_rules_may_read_config_tables_ctes_their_own_table_and_table_functions() -> None:
    config = parse_config(
        "tables:\n"
        "  orders:\n    kind: fact\n    target: x\n    keys: [id]\n    quality:\n"
        "      - {type: sql_row, sql: 'id IN (SELECT i.order_id FROM order_items AS i)'}\n"
        "      - {type: sql_dataset, sql: 'WITH Late AS (SELECT * FROM orders) SELECT * FROM"
        " late, range(3) AS r, read_parquet(''x.parquet'') AS p'}\n"
        "  order_items: {kind: fact, target: y, keys: [id]}\n",
        "riverbed.yaml",
    )
    assert len(config.tables["orders"].quality) == 2


def test_a_typo_in_a_custom_rules_table_is_reported_at_load_through_the_cli(
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path,
        "tables:\n  orders: {kind: fact, target: x, keys: [id], quality: [{type: sql_row, "
        "sql: 'id IN (SELECT order_id FROM order_itemz)'}]}\n"
        "  order_items: {kind: fact, target: y, keys: [id]}\n",
    )
    result = run_cli("source", "status", "-c", str(path))
    assert result.code != 0 and "Traceback" not in result.text
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "tables.orders.quality.0.sql" in lines[0], result.err
    assert "'order_itemz'" in lines[0] and "order_items" in lines[0]


def test_several_mistakes_are_all_reported_through_the_cli(tmp_path: Path) -> None:
    path = write_config(tmp_path, "lake: {max_rows: 0, max_seconds: -1}\nwarehouse: {engine: x}\n")
    result = run_cli("source", "status", "-c", str(path))
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 3, result.err
    assert all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in result.text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "source:\n  slot: riverbed\n lake: oops\n")
    result = run_cli("source", "status", "-c", str(path))
    assert result.code == 2
    assert "line 3" in result.err and "Traceback" not in result.text


def test_an_empty_config_file_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "# nothing yet\n")
    result = run_cli("source", "status", "-c", str(path))
    assert result.code == 2
    [line] = result.err.strip().splitlines()
    assert "empty" in line and "riverbed init" in line


def test_missing_named_config_file(tmp_path: Path) -> None:
    result = run_cli("source", "status", "-c", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert "no such file" in result.err and "riverbed init" in result.err


@pytest.mark.parametrize(
    "text",
    [
        'source: {dsn: "host=db.example password=hunter2 dbname=shop"}\n',
        "source: {password: hunter2}\n",
        "lake: {path: 's3://bucket/x', secret_access_key: hunter2}\n",
        "governance: {pii_key: hunter2}\n",
    ],
)
def test_secrets_in_the_file_are_refused_without_being_echoed(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, text)
    result = run_cli("source", "status", "-c", str(path))
    assert result.code == 2
    assert "hunter2" not in result.text
    assert "{env: VARIABLE}" in result.err


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("host=db sslpassword=hunter2", "contains a sslpassword"),
        ("dbname=postgresql://u:hunter2@db/shop", "contains a password"),
        ("dbname='host=db password=hunter2'", "contains a password"),
        ("this is not a dsn", "not a valid PostgreSQL connection string"),
    ],
)
def test_a_bad_dsn_is_one_line_naming_the_key(tmp_path: Path, dsn: str, says: str) -> None:
    path = write_config(tmp_path, f"warehouse: {{engine: postgres, dsn: {json.dumps(dsn)}}}\n")
    result = run_cli("query", "--as", "admin", "select 1", "-c", str(path))
    assert result.code == 2
    assert "hunter2" not in result.text
    [line] = result.err.strip().splitlines()
    assert "warehouse.dsn" in line and says in line


def test_secret_references_resolve_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("RB_TEST_PW", "from-env")
    assert SecretRef(env="RB_TEST_PW").reveal() == "from-env"
    assert SecretRef(file=secret_file).reveal() == "from-file"
    monkeypatch.delenv("RB_TEST_PW")
    with pytest.raises(ValueError, match="RB_TEST_PW is not set"):
        SecretRef(env="RB_TEST_PW").reveal()
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config("source: {password: {env: A, file: b}}\n", "f")


def test_a_relative_secret_file_is_the_project_folders_not_the_current_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "proj"
    path = write_config(folder, "source: {password: {file: secrets/pw}}\n")
    (folder / "secrets").mkdir()
    (folder / "secrets" / "pw").write_text("from-the-project\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    password = load_project(path).config.source.password
    assert password is not None and password.reveal() == "from-the-project"


def test_the_demo_logins_are_made_once_private_and_only_in_the_logins_folder(
    tmp_path: Path,
) -> None:
    from riverbed.govern.logins import demo_logins, ensure_logins

    own = tmp_path / "own.password"  # a user's own secret file: a missing one stays missing
    path = write_config(tmp_path / "p", demo_config_text())
    text = path.read_text().replace(
        "eu_analyst:\n      roles:",
        f"reader: {{roles: [admin], password: {{file: {own}}}}}\n    eu_analyst:\n      roles:",
    )
    path.write_text(text)
    project = load_project(path)
    written = ensure_logins(project)
    logins = tmp_path / "p" / ".riverbed" / "logins"
    assert sorted(p.name for p in written) == ["admin.password", "eu_analyst.password"]
    assert not own.exists()
    assert logins.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in logins.iterdir()} == {0o600}
    passwords = demo_logins(project)
    assert set(passwords) == {"admin", "eu_analyst"}
    assert passwords["admin"] != passwords["eu_analyst"]
    assert all(len(p) == 19 and p.count("-") == 3 for p in passwords.values())
    # the next command keeps them (a password chosen by hand too)
    (logins / "admin.password").write_text("chosen\n")
    assert ensure_logins(project) == []
    assert demo_logins(project)["admin"] == "chosen"
    # and the web app logs in with them
    from fastapi.testclient import TestClient

    from riverbed.serve.app import create_app

    (logins / "admin.password").unlink()
    own.write_text("x\n")
    client = TestClient(create_app(project))
    assert (logins / "admin.password").exists()
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    answer = client.post(
        "/login",
        data={
            "principal": "eu_analyst",
            "password": demo_logins(project)["eu_analyst"],
            "csrf_token": token[1],
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def test_init_writes_the_demo_config_which_is_also_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli("init", str(tmp_path / "proj"))
    assert result.code == 0, result.text
    written = tmp_path / "proj" / "riverbed.yaml"
    text = written.read_text()
    assert text.count("#") > 20  # every section is explained
    project = load_project(written)
    assert set(project.config.tables) == {
        "customers",
        "sellers",
        "products",
        "orders",
        "order_items",
        "returns",
    }
    assert project.config.tables["customers"].kind == "dimension"
    assert project.config.tables["order_items"].kind == "fact"
    # with no riverbed.yaml in the folder, commands run on exactly these defaults
    monkeypatch.chdir(tmp_path)
    defaults = load_project(None)
    assert defaults.config_path is None
    # (their relative secret files relative to where they run, as the file's to its folder)
    assert defaults.config == parse_config(text, "init", tmp_path)
    assert project.config == parse_config(text, "init", tmp_path / "proj")
    # a second init does not clobber the user's edits
    again = run_cli("init", str(tmp_path / "proj"))
    assert again.code == 1 and "already exists" in again.err
    assert written.read_text() == text


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "p", "lake: {path: data/lake}\n")
    project = load_project(path)
    assert project.path(project.config.lake.path) == (tmp_path / "p" / "data" / "lake").resolve()
    assert (
        project.path(project.config.source.embedded.data_dir)
        == (tmp_path / "p" / ".riverbed" / "pg").resolve()
    )


DSNS = [
    "host=db.example dbname=shop",
    "host=db.example password=hunter2 dbname=shop",
    "host = db.example  password = 'hunter 2' dbname=shop",
    "password='it\\'s' host=x",
    "password=a\\ b host=x",
    "PASSWORD=x host=y",
    "host=x password= dbname=y",
    "host=x password=''",
    "dbname=shop user=riverbed port=5432 sslmode=require",
    "postgresql://riverbed@db.example:5432/shop",
    "postgresql://riverbed:hunter2@db.example/shop",
    "postgres://u:p%40ss@h1,h2/db?sslmode=require",
    "postgresql:///shop?host=/tmp&password=hunter2",
    "postgresql://db.example/shop?application_name=x",
    "host=x dbname",
    "host='unclosed",
    "host=x foo=bar",
    "postgresql://h:notaport/db",
    "postgresql://h/db?foo=bar",
    "=x",
]


@pytest.mark.parametrize("dsn", DSNS)
def test_dsn_passwords_are_found_as_libpq_finds_them(dsn: str) -> None:
    """The DSN check reads the plain forms itself (no psycopg import); wherever it reads one,
    it finds a password exactly when libpq does, and anything else goes to libpq."""
    from psycopg.conninfo import conninfo_to_dict

    from riverbed.config.fields import _conninfo_keys, _dsn_without_password

    try:
        libpq: dict[str, Any] | None = conninfo_to_dict(dsn)
    except Exception:
        libpq = None
    mine = _conninfo_keys(dsn)
    if libpq is None:
        assert mine is None
        with pytest.raises(ValueError, match="not a valid PostgreSQL connection string"):
            _dsn_without_password(dsn)
        return
    if mine is not None:
        assert bool(mine.get("password")) == bool(libpq.get("password")), (mine, libpq)
    if libpq.get("password"):
        with pytest.raises(ValueError, match="contains a password"):
            _dsn_without_password(dsn)
    else:
        assert _dsn_without_password(dsn) == dsn


@pytest.mark.parametrize("command", [("run", "--once"), ("capture", "--once")])
def test_a_state_path_that_cannot_be_created_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the state store's folder would have to be inside a file
    path = write_config(tmp_path / "p", f"state: {{path: {blocker / 'sub' / 'state.db'}}}\n")
    result = run_cli(*command, "-c", str(path))
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    [line] = result.err.strip().splitlines()
    assert "state.path" in line and "must exist" in line and "writable" in line


def test_init_into_a_file_or_an_impossible_folder_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for target, says in [(a_file, "is a file, not a folder"), (a_file / "sub", "cannot write")]:
        result = run_cli("init", str(target))
        assert result.code == 1, result.text
        assert "Traceback" not in result.text
        [line] = result.err.strip().splitlines()
        assert says in line and str(target) in line
    assert a_file.read_text() == "keep me"


def test_a_bad_cron_is_refused_by_every_command_not_only_run(tmp_path: Path) -> None:
    path = write_config(tmp_path, "orchestration: {cron: '0 25 * * *'}\n")
    for command in [("status",), ("ddl",)]:
        result = run_cli(*command, "-c", str(path))
        assert result.code == 2, result.text
        [line] = result.err.strip().splitlines()
        assert "orchestration.cron" in line and "'hour': 25 is outside 0-23" in line


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    config = parse_config(
        "notifiers:\n  a: &base {type: webhook, url: 'http://x'}\n"
        "  b: {<<: *base, url: 'http://y'}\n",
        "riverbed.yaml",
    )
    assert config.notifiers["b"].url == "http://y"


def test_a_sql_error_column_counts_in_the_configured_text() -> None:
    """A rule's predicate is parsed inside `select 1 where `, whose 15 characters the column
    of the error once counted too."""
    text = "tables:\n  t: {kind: fact, target: x, keys: [id], quality: [{type: sql_row, sql: 'a >>> b'}]}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "riverbed.yaml")
    assert "(line 1, column 5)" in caught.value.problems[0], caught.value.problems


def test_value_and_expression_rules_and_the_logs_section_load() -> None:
    config = parse_config(
        "tables:\n  t:\n    kind: fact\n    target: x\n    keys: [id]\n    quality:\n"
        "      - {type: not_accepted_values, column: c, values: [void, 0]}\n"
        "      - {type: not_equal, column: q, value: 0}\n"
        "      - {type: range, column: q, min: 0, max: 9, exclusive_min: true}\n"
        "      - {type: expression, sql: 'q * 2 > 0'}\n"
        "logs: {path: ../shared/logs/pipeline.jsonl, level: DEBUG}\n",
        "riverbed.yaml",
    )
    rules = config.tables["t"].quality
    assert [r.type for r in rules] == ["not_accepted_values", "not_equal", "range", "expression"]
    assert (rules[2].exclusive_min, rules[2].exclusive_max) == (True, False)
    assert rules[1].value == 0 and rules[3].label == "expression()"
    assert config.logs.level == "debug"
    assert str(config.logs.path) == "../shared/logs/pipeline.jsonl"
    defaults = parse_config("version: 1\n", "riverbed.yaml").logs
    assert (str(defaults.path), defaults.level) == (".riverbed/logs/riverbed.jsonl", "info")


def test_a_postgres_state_store_names_its_server_password_and_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from riverbed.state import state_conninfo

    monkeypatch.setenv("STATE_PW", "s3cret")
    state = parse_config(
        "state:\n  engine: postgres\n  dsn: 'host=db dbname=ops user=riverbed'\n"
        "  password: {env: STATE_PW}\n",
        "riverbed.yaml",
    ).state
    assert (state.engine, state.schema_name) == ("postgres", "riverbed_state")
    assert "password=s3cret" in state_conninfo(state)
    assert "s3cret" not in repr(state)
    named = parse_config(
        "state: {engine: postgres, dsn: 'host=db dbname=ops', schema: pipeline_state}\n",
        "riverbed.yaml",
    )
    assert named.state.schema_name == "pipeline_state"


def test_a_dimension_versions_per_transaction_unless_set_per_change() -> None:
    from riverbed.load.model import warehouse_model

    config = parse_config(
        "tables:\n"
        "  a: {kind: dimension, target: dim_a, keys: [id], tracked: [x]}\n"
        "  b: {kind: dimension, target: dim_b, keys: [id], tracked: [x], versions: per_change}\n",
        "riverbed.yaml",
    )
    model = warehouse_model(config)
    assert [d.versions for d in model.dimensions] == ["per_transaction", "per_change"]


def test_business_time_columns_reach_the_warehouse_model() -> None:
    """event_time dates a fact's events, effective_from a dimension's versions; absent, both
    are None (the commit time)."""
    from riverbed.load.model import warehouse_model

    config = parse_config(
        "tables:\n"
        "  items: {kind: dimension, target: dim_item, keys: [item_id], tracked: [x],"
        " effective_from: updated_at}\n"
        "  plain: {kind: dimension, target: dim_plain, keys: [plain_id], tracked: [x]}\n"
        "  events: {kind: fact, target: fact_events, keys: [id], event_time: happened_at}\n"
        "  other: {kind: fact, target: fact_other, keys: [id]}\n",
        "riverbed.yaml",
    )
    model = warehouse_model(config)
    assert [(d.source, d.effective_from) for d in model.dimensions] == [
        ("items", "updated_at"),
        ("plain", None),
    ]
    assert [(f.source, f.event_time) for f in model.facts] == [
        ("events", "happened_at"),
        ("other", None),
    ]


def test_the_dashboards_section_loads_with_the_seed_tiers_as_its_default() -> None:
    default = parse_config("version: 1\n", "riverbed.yaml").dashboards.seller_buckets
    assert (default.measure, default.method, default.high, default.medium) == (
        "return_rate",
        "thresholds",
        0.15,
        0.05,
    )
    config = parse_config(
        "dashboards:\n  seller_buckets: {measure: refund_rate, method: quantiles, high: 0.8,"
        " medium: 0.4}\n  spending_buckets: [10, 20]\n",
        "riverbed.yaml",
    ).dashboards
    assert (config.seller_buckets.method, config.seller_buckets.high) == ("quantiles", 0.8)
    assert config.spending_buckets == [10, 20]
