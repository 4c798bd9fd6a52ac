"""The extract's generations on disk (riverbed.serve.extracts.store): what a prune keeps."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from riverbed.serve.extracts import store


def _published(project: Any, count: int) -> list[str]:
    names = []
    for _ in range(count):
        name = store.new_name()
        path = store.prepare(project, name)
        path.write_bytes(b"a generation")
        store.publish(project, _generation(name))
        names.append(name)
    return names


def _generation(name: str) -> store.Generation:
    return store.Generation(
        name=name, fingerprint="f", watermark=0.0, run_id=None, loaded_at=None,
        refreshed_at=time.time(), full=True,
    )  # fmt: skip


def _left(project: Any) -> set[str]:
    return {p.name for p in store.folder(project).iterdir()}


def test_a_prune_spares_the_newest_superseded_generations_only(tmp_path: Path) -> None:
    # a refresh every 5 s once kept every generation of the last 5 minutes: ~60 whole copies
    project = SimpleNamespace(home=tmp_path)
    names = _published(project, 6)
    wal = store.path_of(project, names[0]).with_name(names[0] + store.SUFFIX + ".wal")
    wal.write_bytes(b"its side file")

    deleted = store.prune(project, grace=3600, keep_superseded=2)

    kept = {names[-1], names[-2], names[-3]}  # the current one and the two before it
    assert _left(project) == {store.POINTER} | {n + store.SUFFIX for n in kept}
    assert wal.name in deleted
    assert store.current(project).name == names[-1]


def test_a_prune_deletes_superseded_generations_past_the_grace(tmp_path: Path) -> None:
    project = SimpleNamespace(home=tmp_path)
    names = _published(project, 3)
    old = time.time() - 2 * store.GRACE_SECONDS
    for name in names[:2]:
        os.utime(store.path_of(project, name), (old, old))
    orphan = store.prepare(project, store.new_name())  # a refresh killed long ago
    orphan.write_bytes(b"half a generation")
    os.utime(orphan, (old, old))

    store.prune(project)

    assert _left(project) == {store.POINTER, names[-1] + store.SUFFIX}
