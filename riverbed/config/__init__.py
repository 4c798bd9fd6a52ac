"""Configuration: the typed models of riverbed.yaml and how it is loaded.

``models`` (the typed shape of riverbed.yaml: the root model, and one module per section beside
it, named in its docstring), ``loader`` (parse, validate, one readable line per mistake; the
demo config ``riverbed.yaml``), ``cron`` (the cron expressions a schedule takes), ``proposal``
and ``writer`` (`riverbed init --from-source`: what a source schema's catalog suggests, and the
commented riverbed.yaml that says it).
A leaf: it imports no stage, so every stage can read its config.
"""

from riverbed.config.loader import Project, demo_config_text, load_project, parse_config
from riverbed.config.models import RiverbedConfig

__all__ = ["Project", "RiverbedConfig", "demo_config_text", "load_project", "parse_config"]
