"""Loading riverbed.yaml: parse, validate, and turn every mistake into one readable line.

The demo config shipped in this package is both what ``riverbed init`` writes and what commands
use when there is no config file, so the defaults a newcomer runs on are exactly the file they
would get to edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from riverbed.config.models import RiverbedConfig, cross_reference_problems
from riverbed.errors import ConfigError

DEFAULT_CONFIG_NAME = "riverbed.yaml"
SENSITIVE_KEYS = {
    "dsn",
    "password",
    "headers",
    "access_key_id",
    "secret_access_key",
    "pii_key",
    "token",
}


def demo_config_text() -> str:
    """The commented demo configuration, as ``riverbed init`` writes it."""
    return resources.files("riverbed.config").joinpath("riverbed.yaml").read_text()


@dataclass(frozen=True)
class Project:
    """A validated config plus the folder its relative paths are relative to."""

    config: RiverbedConfig
    root: Path
    config_path: Path | None  # None when running on the embedded demo defaults

    def path(self, relative: Path | str) -> Path:
        """Resolve a path from the config against the project folder."""
        candidate = Path(relative).expanduser()
        return candidate if candidate.is_absolute() else (self.root / candidate).resolve()

    @property
    def home(self) -> Path:
        """The folder for Riverbed's own files (.riverbed beside the config)."""
        return self.root / ".riverbed"


def load_project(config_path: Path | None = None) -> Project:
    """Load the config at ``config_path``, or ./riverbed.yaml, or the demo defaults.

    An explicitly named file that does not exist is an error; a missing ./riverbed.yaml is not.
    """
    if config_path is None:
        candidate = Path.cwd() / DEFAULT_CONFIG_NAME
        if not candidate.exists():
            root = Path.cwd()
            return Project(parse_config(demo_config_text(), "<demo defaults>", root), root, None)
        config_path = candidate
    if not config_path.exists():
        raise ConfigError(
            [f"{config_path}: no such file; create one with `riverbed init` or drop -c"]
        )
    try:
        text = config_path.read_text()
    except OSError as exc:
        raise ConfigError([f"{config_path}: cannot be read ({exc.strerror})"]) from exc
    root = config_path.resolve().parent
    return Project(parse_config(text, str(config_path), root), root, config_path.resolve())


class _DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping names one key twice (PyYAML would silently keep the last)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: a second ``quality:`` would
    otherwise silently replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may be overridden: that is what merging is for
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if first is not None:
                raise _DuplicateKeyError(
                    problem=(
                        f"key '{key}' appears twice in one mapping (first on line "
                        f"{first.start_mark.line + 1}); the second would silently replace the "
                        "first: merge them into one"
                    ),
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, origin: str, root: Path | None = None) -> RiverbedConfig:
    """Validate YAML text; raise ConfigError with one line per problem. ``root``, the project
    folder, is what a relative ``{file: PATH}`` secret is relative to (kept relative without)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{origin}:{where}: not valid YAML: {problem}"]) from None
    if data is None:  # an empty file is a mistake more often than a wish for every default
        raise ConfigError(
            [
                f"{origin}: the file is empty; write one with `riverbed init`, or leave out -c "
                "to run on the demo defaults"
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{origin}: the top level must be a mapping of sections (source:, lake:, ...)"]
        )
    try:
        config = RiverbedConfig.model_validate(data, context={"root": root} if root else None)
    except ValidationError as exc:
        raise ConfigError([f"{origin}: {line}" for line in _describe(exc)]) from None
    problems = cross_reference_problems(config)
    if problems:
        raise ConfigError([f"{origin}: {line}" for line in problems])
    return config


def _describe(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
        key = ".".join(loc) or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(RiverbedConfig, loc[:-1])
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{key}: unknown key{hint}")
            continue
        if kind == "missing":
            lines.append(f"{key}: required but missing")
            continue
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        hidden = isinstance(value, (dict, list)) or value is None or _sensitive(loc)
        shown = "" if hidden else f" = {value!r}"
        lines.append(f"{key}{shown}: {message}")
    return lines


def _sensitive(loc: list[str]) -> bool:
    # a DSN may hold a password and a secret field may hold one pasted by mistake: never echo them
    return any(part in SENSITIVE_KEYS for part in loc)


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the member type (e.g. "SecretRef", "function-before[...]") to union paths
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys a mapping at ``loc`` may hold, found by walking the models along the path."""
    current: Any = model
    for part in loc:
        if isinstance(current, _DictOf):
            current = current.value  # the part is a free key such as a table name
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = _field_named(current, part)
            current = None if field is None else _inner_model(field.annotation)
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _field_named(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


class _DictOf:
    """Marks a mapping (or list) of models, whose next path part is a free key (an index)."""

    def __init__(self, value: Any):
        self.value = value


def _inner_model(annotation: Any) -> Any:
    """The model inside an annotation such as ``X | None`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (dict, list):  # the next part: a free key, or an index
        inner = _inner_model(get_args(annotation)[-1])
        return None if inner is None else _DictOf(inner)
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
