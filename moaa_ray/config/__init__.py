"""The one typed config of moaa_ray: YAML files plus ``key=value`` overrides, checked before a run.

Split by what each part is:

- :mod:`~moaa_ray.config.base`: what every section shares, and the operational marker;
- :mod:`~moaa_ray.config.models`: the ``models`` section, each model's engine and actor pool;
- :mod:`~moaa_ray.config.stages`: inputs, sampling, ``generate``, ``judging``, ``preferences``;
- :mod:`~moaa_ray.config.evaluate`: ``evaluate`` and its benchmarks;
- :mod:`~moaa_ray.config.train`: ``sft`` and ``dpo``;
- :mod:`~moaa_ray.config.run`: the whole run (``ray``, ``iterations``, every section) and the checks
  across sections;
- :mod:`~moaa_ray.config.loading`: reading YAML, overrides, and errors that name the key and file;
- :mod:`~moaa_ray.config.validation`: ``moaa validate``, what a run would only find out later;
- :mod:`~moaa_ray.config.reference`: every key with its type, default and description.

The schema and loading names are re-exported here: ``from moaa_ray.config import load_config``.
"""

from moaa_ray.config.base import OPERATIONAL
from moaa_ray.config.evaluate import BenchmarkConfig, EvaluateConfig, GradingSamplingConfig
from moaa_ray.config.loading import (
    ConfigCheck,
    ConfigError,
    check_config,
    dump_config,
    load_config,
    read_yaml,
)
from moaa_ray.config.models import (
    ENGINE_BATCH_SIZES,
    ENGINE_SETTINGS,
    PAIRWISE_ENGINES,
    ModelConfig,
    PairRMConfig,
    SimulatedConfig,
)
from moaa_ray.config.run import MoaaConfig, RayConfig
from moaa_ray.config.stages import (
    GenerateConfig,
    InputConfig,
    JudgingConfig,
    PreferencesConfig,
    SamplingConfig,
)
from moaa_ray.config.train import DPOConfig, LoraConfig, SFTConfig, TrainConfig

__all__ = [
    "ENGINE_BATCH_SIZES",
    "ENGINE_SETTINGS",
    "OPERATIONAL",
    "PAIRWISE_ENGINES",
    "BenchmarkConfig",
    "ConfigCheck",
    "ConfigError",
    "DPOConfig",
    "EvaluateConfig",
    "GenerateConfig",
    "GradingSamplingConfig",
    "InputConfig",
    "JudgingConfig",
    "LoraConfig",
    "MoaaConfig",
    "ModelConfig",
    "PairRMConfig",
    "PreferencesConfig",
    "RayConfig",
    "SFTConfig",
    "SamplingConfig",
    "SimulatedConfig",
    "TrainConfig",
    "check_config",
    "dump_config",
    "load_config",
    "read_yaml",
]
