"""Typed configuration: one path from YAML and CLI flags to the resolved ``config.yaml``.

:mod:`.sections` holds the dataclasses (one per section, a help line per key, invariants checked
in ``__post_init__``; the demo data's in :mod:`.data_gen`, ``palora compare``'s in :mod:`.comparison`),
:mod:`.build` the path: defaults < ``--config FILE.yaml`` < ``--set
key=value`` < the verb's flags.
"""

from .build import from_dict, load, load_yaml, parse_override, resolve, save, to_dict
from .data_gen import DataSpec
from .fields import check_value, documented, require
from .sections import (
    DEFAULT_METHODS,
    PACKAGED_DEFAULT_MODEL,
    TRACKERS,
    CompareConfig,
    DataConfig,
    EvalConfig,
    InjectConfig,
    LogConfig,
    ModelConfig,
    ProbeConfig,
    ReinforceConfig,
    RunConfig,
    SVFConfig,
    TrainConfig,
)

__all__ = [
    "DEFAULT_METHODS", "PACKAGED_DEFAULT_MODEL", "TRACKERS", "CompareConfig", "DataConfig", "DataSpec", "EvalConfig",
    "InjectConfig", "LogConfig", "ModelConfig", "ProbeConfig", "ReinforceConfig", "RunConfig", "SVFConfig",
    "TrainConfig", "check_value", "documented", "from_dict", "load", "load_yaml", "parse_override", "require",
    "resolve", "save", "to_dict",
]
