"""riverbed.yaml's ``logs:`` section: where the JSON-lines log goes and how much it says.

The file is the record machines read (riverbed.observe.logs writes it): ``path`` is relative
to the config's folder like every other path, and ``level`` is the least a record must be to
be written there. The console is not set here: it shows warnings (errors only with
``--quiet``/``--json``) whatever the file keeps, because the command line prints its own
progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator

from riverbed.config.fields import Model

LogLevel = Literal["debug", "info", "warning", "error"]


class LogsConfig(Model):
    path: Path = Path(".riverbed/logs/riverbed.jsonl")  # JSON lines, rotated at 20 MB
    level: LogLevel = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value  # INFO reads as info

    @field_validator("path", mode="before")
    @classmethod
    def _a_file(cls, value: object) -> object:
        # "logs/" would otherwise become the file "logs"
        if isinstance(value, str) and (value.endswith("/") or not Path(value).name):
            raise ValueError("must name a file, not a folder: e.g. .riverbed/logs/riverbed.jsonl")
        return value
