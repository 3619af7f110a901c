"""Typed, versioned, validated training config (YAML in and out)."""

from .base import CONFIG_VERSION
from .load import config_from_dict, dump_config, load_config, parse_overrides, save_config
from .schema import COMPONENT_KEYS, TrainConfig

__all__ = [
    "COMPONENT_KEYS",
    "CONFIG_VERSION",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
    "parse_overrides",
    "save_config",
]
