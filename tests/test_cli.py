"""The command line as a whole: `--help` is the map, and `riverbed demo` runs end to end, twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import free_port, run_cli, write_config
from riverbed.config import demo_config_text

COMMANDS = [
    ("init",),
    ("source", "up"),
    ("source", "down"),
    ("source", "status"),
    ("shop", "seed"),
    ("shop", "run"),
    ("capture",),
    ("status",),
    ("demo",),
]


def test_help_is_the_map_of_the_product() -> None:
    top = run_cli("--help")
    assert top.code == 0
    for name in ("init", "source", "shop", "demo"):
        assert name in top.out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help")
    assert result.code == 0, result.text
    assert "Example:" in result.out
    assert f"riverbed {' '.join(command)}" in result.out
    assert "--config" in result.out or command == ("init",)


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("sourse", "up")
    assert result.code == 2 and "Traceback" not in result.text


def test_demo_runs_end_to_end_and_is_safe_to_run_twice(tmp_path: Path) -> None:
    # the demo config as `riverbed init` writes it, on a port of its own
    text = demo_config_text().replace("port: 54329", f"port: {free_port()}")
    assert "port: 54329" not in text
    config = write_config(tmp_path, text)
    try:
        first = run_cli("demo", "--duration", "8", "--every", "2", "-c", str(config), timeout=600)
        assert first.code == 0, first.text
        out = first.out
        assert "started" in out and "seeded" in out
        assert "changes/s" in out
        assert "what landed in the lake" in out and "snapshot rows" in out
        assert "fastest growing" in out and "fastest declining" in out
        assert "sellers by return rate" in out and "revenue by region" in out
        assert "riverbed source status" in out  # where to look next
        # the pipeline ran on a schedule during the traffic, and the summary says what it did
        assert "a pipeline run every" in out and "changes transformed" in out
        assert "dirty rows quarantined" in out and "dim_customer" in out
        assert "fact_order_items" in out and "runs:" in out and "succeeded" in out
        assert "capture_lag_high" in out  # the alarms table

        second = run_cli("demo", "--duration", "2", "-c", str(config), timeout=600)
        assert second.code == 0, second.text
        assert "already running" in second.out and "already seeded" in second.out
        assert "capture resumed" in second.out
    finally:
        run_cli("source", "down", "-c", str(config))
