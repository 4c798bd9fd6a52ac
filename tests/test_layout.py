"""The package layout keeps its promises (issue 16 item 3): stages never import each other,
``lake``, ``state`` and ``config`` import no stage, nothing imports the command line, and
only the state store reaches its database (no ``sqlite3`` elsewhere, and the stages see the
store's protocol, never its implementation).

Every module under riverbed/ is parsed with ``ast`` and every import in it is checked, at any
depth (an import inside a function counts as much as one at the top).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "riverbed"

# the pipeline's stages: each runs on its own and reaches another only through the lake or state
STAGES = {"capture", "transform", "load", "orchestrate", "observe", "govern", "serve"}
# what every stage may share: none of these imports a stage
SHARED = {"lake", "state", "config", "source", "errors", "shop"}
# every stage may import observe (its logs and metrics; STYLE.md), but observe imports no stage
# the parts that may import many stages: orchestrate runs them all, serve shows them all
CONDUCTORS = {"orchestrate", "serve"}
LEAVES = {"lake", "state", "config"}
# the state store's implementations: the stages see only its protocol (riverbed.state.store)
STATE_IMPL = ("riverbed.state.sql", "riverbed.state.postgres")  # and .sqlite

# imports that break the rules today, each to be removed by the work named beside it; the test
# fails on any violation not listed here, and on one listed here that is gone
KNOWN: set[str] = set()


def part_of(module: str) -> str | None:
    """The part a dotted ``riverbed.x...`` module belongs to (``x``), or None outside riverbed."""
    pieces = module.split(".")
    if pieces[0] != "riverbed":
        return None
    return pieces[1] if len(pieces) > 1 else "riverbed"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    pieces = list(relative.parts)
    if pieces[-1] == "__init__":
        pieces.pop()
    return ".".join(pieces)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, as absolute dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from riverbed import capture` imports the part itself
            if target == "riverbed":
                found.update(f"riverbed.{alias.name}" for alias in node.names)
    return found


def violations() -> set[str]:
    found: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        own = part_of(module_name(path))
        shown = path.relative_to(PACKAGE.parent).as_posix()
        for target in sorted(imported_modules(path)):
            theirs = part_of(target)
            if target == "sqlite3" and own != "state":
                found.add(f"{shown} imports {target} (only the state store touches its database)")
                continue
            if theirs is None or theirs == own or theirs == "riverbed":
                continue
            if theirs == "cli" and own != "__main__":  # `python -m riverbed` starts it
                rule = "nothing imports the command line"
            elif theirs == "state" and target.startswith(STATE_IMPL):
                rule = "only the state store touches its database (riverbed.state.store)"
            elif own in LEAVES and theirs in STAGES:
                rule = f"{own} imports no stage"
            elif own in SHARED and theirs in STAGES:
                rule = f"{own} is shared by the stages and imports none"
            elif own in STAGES and own not in CONDUCTORS and theirs in STAGES - {"observe"}:
                rule = "a stage never imports another stage"
            else:
                continue
            found.add(f"{shown} imports {target} ({rule})")
    return found


def test_the_walk_sees_imports_inside_functions() -> None:
    """The walk is not fooled by a deferred import (config's cron check once hid one)."""
    imports = imported_modules(PACKAGE / "config" / "models.py")
    assert "sqlglot" in imports  # imported inside a validator, not at the top


def test_no_part_imports_across_the_layout_rules() -> None:
    found = violations()
    new = sorted(found - KNOWN)
    assert not new, "imports that break the layout:\n" + "\n".join(new)


def test_every_known_violation_still_exists() -> None:
    """A known violation that is gone comes off the list, so it cannot come back unnoticed."""
    gone = sorted(KNOWN - violations())
    assert not gone, "no longer violated, remove from KNOWN:\n" + "\n".join(gone)
