"""The /metrics endpoint: the state store's counters (sums of their increments) and gauges
(newest samples) in Prometheus' text format, as the web app's route answers them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from riverbed.observe.prometheus import metrics_text
from riverbed.serve.metrics import metrics_router
from riverbed.state import SQLiteStore


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def server(state: Path) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(metrics_router(state))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def record(state: Path, values: dict[str, float], labels: dict[str, str], ts: float) -> None:
    manifest = SQLiteStore(state)
    try:
        manifest.metrics.record(values, labels=labels, ts=ts)
    finally:
        manifest.close()


def scrape(
    server: TestClient,
) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    """name -> (type, {sorted labels: value})"""
    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.text
    return {
        family.name: (
            family.type,
            {tuple(sorted(s.labels.items())): s.value for s in family.samples},
        )
        for family in text_string_to_metric_families(text)
    }


def test_counters_sum_their_increments_and_gauges_show_the_newest(
    state: Path, server: TestClient
) -> None:
    record(state, {"rows_total": 120, "lag_seconds": 2.5}, {"table": "orders"}, ts=1000)
    record(state, {"rows_total": 7}, {"table": "customers"}, ts=1000)
    record(state, {"rows_total": 40}, {"stage": "capture"}, ts=1000)  # other label names
    record(state, {"rows_total": 5, "lag_seconds": 1.5}, {"table": "orders"}, ts=1001)
    record(state, {"runs_failed": 1}, {}, ts=1000)
    record(state, {"runs_failed": 1}, {}, ts=1002)

    families = scrape(server)

    assert families["riverbed_up"] == ("gauge", {(): 1.0})
    # a counter's family drops _total; its samples carry it
    assert families["riverbed_rows"] == (
        "counter",
        {
            (("table", "orders"),): 125.0,
            (("table", "customers"),): 7.0,
            (("stage", "capture"),): 40.0,
        },
    )
    assert families["riverbed_runs_failed"] == ("counter", {(): 2.0})
    assert families["riverbed_lag_seconds"] == ("gauge", {(("table", "orders"),): 1.5})
    assert set(families) == {
        "riverbed_up",
        "riverbed_rows",
        "riverbed_lag_seconds",
        "riverbed_runs_failed",
    }
    assert "\nriverbed_runs_failed_total 2.0\n" in server.get("/metrics").text


def test_a_counter_survives_pruning(state: Path, server: TestClient) -> None:
    for ts in (100.0, 200.0, 300.0):
        record(state, {"runs_succeeded": 1}, {}, ts=ts)
    before = scrape(server)["riverbed_runs_succeeded"]
    manifest = SQLiteStore(state)
    try:
        assert manifest.metrics.prune(older_than=50, now=1000.0) == 2
    finally:
        manifest.close()
    assert scrape(server)["riverbed_runs_succeeded"] == before == ("counter", {(): 3.0})


def test_newest_sample_wins_whatever_the_insert_order(state: Path, server: TestClient) -> None:
    labels = {"table": "orders"}
    record(state, {"lag_seconds": 1.0}, labels, ts=100)
    record(state, {"lag_seconds": 2.0}, labels, ts=300)
    record(state, {"lag_seconds": 9.0}, labels, ts=200)  # late writer, older sample
    assert scrape(server)["riverbed_lag_seconds"][1] == {(("table", "orders"),): 2.0}

    # each scrape reads the store afresh
    record(state, {"lag_seconds": 0.5}, labels, ts=400)
    assert scrape(server)["riverbed_lag_seconds"][1] == {(("table", "orders"),): 0.5}


def test_names_and_labels_are_sanitized(state: Path) -> None:
    record(state, {"lag.seconds-p95": 4.0}, {"1st-key": "v 1", "__x": "y", "ok": "é"}, ts=1)
    families = {f.name: f for f in text_string_to_metric_families(metrics_text(state).decode())}
    (sample,) = families["riverbed_lag_seconds_p95"].samples
    assert sample.labels == {"_1st_key": "v 1", "_x": "y", "ok": "é"}
    assert sample.value == 4.0


def test_series_that_sanitize_alike_keep_the_newest(state: Path) -> None:
    # two stored series would print as one: a duplicate sample is an invalid exposition
    record(state, {"lag.seconds": 5.0}, {"table": "orders"}, ts=200)
    record(state, {"lag_seconds": 3.0}, {"table": "orders"}, ts=100)
    record(state, {"lag-seconds": 1.0}, {"table": "items"}, ts=50)
    families = list(text_string_to_metric_families(metrics_text(state).decode()))
    (lag,) = [f for f in families if f.name == "riverbed_lag_seconds"]
    assert {s.labels["table"]: s.value for s in lag.samples} == {"orders": 5.0, "items": 1.0}
    assert len(lag.samples) == 2


def test_stored_up_metric_does_not_duplicate_ours(state: Path) -> None:
    record(state, {"up": 0.0}, {}, ts=1)
    (up,) = [
        f
        for f in text_string_to_metric_families(metrics_text(state).decode())
        if f.name == "riverbed_up"
    ]
    assert [s.value for s in up.samples] == [1.0]


def test_missing_store_gives_only_up(state: Path, server: TestClient) -> None:
    assert scrape(server) == {"riverbed_up": ("gauge", {(): 1.0})}
    assert not state.exists()  # a scrape does not create the store


def test_empty_store_gives_only_up(state: Path, server: TestClient) -> None:
    SQLiteStore(state).close()
    assert scrape(server) == {"riverbed_up": ("gauge", {(): 1.0})}


def test_a_query_string_does_not_change_the_path(server: TestClient) -> None:
    assert server.get("/metrics?x=1").status_code == 200


def test_unreadable_store_fails_the_scrape(state: Path, server: TestClient) -> None:
    state.parent.mkdir(parents=True)
    state.write_bytes(b"this is not a sqlite database" * 100)
    response = server.get("/metrics")
    assert response.status_code == 500
    assert response.text == "metrics unavailable; see the riverbed log\n"  # no details


def test_a_lag_measured_before_the_source_went_down_is_left_out(
    state: Path, server: TestClient
) -> None:
    """A lag of 0 stored when the source answered, then source_up 0: the 0 is no longer
    current, so the scrape leaves the lag out (absent() alerts) and says the source is down."""
    record(state, {"capture_lag_seconds": 0.0, "capture_lag_bytes": 0.0}, {"slot": "s"}, 100.0)
    record(state, {"source_up": 1.0}, {}, 100.0)
    assert "riverbed_capture_lag_seconds" in scrape(server)
    record(state, {"source_up": 0.0}, {}, 200.0)
    families = scrape(server)
    assert "riverbed_capture_lag_seconds" not in families
    assert "riverbed_capture_lag_bytes" not in families
    assert families["riverbed_source_up"] == ("gauge", {(): 0.0})
    # a capture that streams again records a newer lag: served again
    record(state, {"capture_lag_seconds": 3.0}, {"slot": "s"}, 300.0)
    assert scrape(server)["riverbed_capture_lag_seconds"][1] == {(("slot", "s"),): 3.0}
