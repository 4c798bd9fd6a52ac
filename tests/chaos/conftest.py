"""The chaos suite's fixtures: a scenario's pipeline (tests/chaos/frame.py) on a source of its
choosing, its services killed and their output printed at the end (pytest shows it when the
scenario fails)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.frame import Chaos, chaos_project, seed_and_snapshot
from conftest import Database

MakeChaos = Callable[..., Chaos]


@pytest.fixture
def make_chaos(tmp_path: Path) -> Iterator[MakeChaos]:
    """make_chaos(source, warehouse=None, **settings): the demo shop seeded in ``source`` and
    snapshotted by a chaos project (warehouse DuckDB, or PostgreSQL ``warehouse``)."""
    made: list[Chaos] = []

    def make(source: Database, warehouse: Database | None = None, **settings: Any) -> Chaos:
        config = chaos_project(tmp_path / "proj", source, warehouse, **settings)
        seed_and_snapshot(config)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        made.append(Chaos(config, source, logs))
        return made[-1]

    yield make
    for chaos in made:
        chaos.supervisor.close()
        print(chaos.supervisor.output())
