"""Typed, versioned, validated training config (YAML in and out)."""

from .load import config_from_dict, dump_config, load_config, parse_overrides, save_config
from .schema import CONFIG_VERSION, TrainConfig

__all__ = [
    "CONFIG_VERSION",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
    "parse_overrides",
    "save_config",
]
