"""Typed, frozen configuration loaded from YAML.

``load_config(path, overrides)`` reads a file (with ``_base_`` composition and ``--set`` style
overrides) into ``Config``; builders read its sections (``build_model(cfg.model)``).
``dump`` turns the resolved config into YAML text (written to ``output_dir/config.yaml`` by
``dcn_det.io.atomic``, like every file); ``cfg.to_dict()``/``config_from_dict`` carry it
through checkpoints.
"""
from .convert import ConfigError, config_from_dict
from .loader import deep_merge, dump, load_config, override_config, parse_override
from .schema import (
    BackboneConfig,
    C4HeadBaseConfig,
    Config,
    DataConfig,
    DatasetConfig,
    EvalConfig,
    FastRCNNHeadConfig,
    FPNFastRCNNHeadConfig,
    FPNNeckConfig,
    FPNRPNConfig,
    HeadBaseConfig,
    HeadConfig,
    ModelConfig,
    NoNeckConfig,
    RFCNHeadConfig,
    RPNBaseConfig,
    RPNConfig,
    RuntimeConfig,
    SolverConfig,
    SyntheticConfig,
)

__all__ = [
    "BackboneConfig", "C4HeadBaseConfig", "Config", "ConfigError", "DataConfig",
    "DatasetConfig", "EvalConfig", "FastRCNNHeadConfig", "FPNFastRCNNHeadConfig", "FPNNeckConfig",
    "FPNRPNConfig", "HeadBaseConfig", "HeadConfig", "ModelConfig", "NoNeckConfig",
    "RFCNHeadConfig", "RPNBaseConfig", "RPNConfig", "RuntimeConfig", "SolverConfig", "SyntheticConfig",
    "config_from_dict", "deep_merge", "dump", "load_config", "override_config", "parse_override",
]
