"""Configuration: the typed models of riverbed.yaml and how it is loaded."""

from riverbed.config.loader import Project, demo_config_text, load_project, parse_config
from riverbed.config.models import RiverbedConfig

__all__ = ["Project", "RiverbedConfig", "demo_config_text", "load_project", "parse_config"]
