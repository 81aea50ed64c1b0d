"""Configuration: a tree of frozen dataclasses with defaults, each field validating itself.

Precedence, lowest to highest: the defaults (`sections`), environment variables (`ENVIRONMENT`),
a TOML file (`--config FILE`), then flags (`load`). Every field's type says what it accepts:
`Literal` choices, and `Annotated` bounds (`Range`, `NonEmpty`), checked whenever a section is
built (`fields`), so `Config()`, `dataclasses.replace(...)`, a TOML file and a flag all pass the
same checks.

A Config remembers which keys the user gave (`given`), so stored settings (an index's model
and regions, a checkpoint's dense and lexeme settings) are overridden only by keys the user
actually set, even when the value set equals the default. The resolved tree is written into
every index manifest, checkpoint and bench result.
"""

from harmosearch.config.fields import (
    Device,
    Fraction,
    NonEmpty,
    NonNegative,
    Positive,
    Precision,
    Range,
    Section,
    Seed,
    Workers,
    nest,
)
from harmosearch.config.load import (
    ENVIRONMENT,
    config_from_dict,
    load_config,
    parse_weights,
    shapes_model_unless_named,
)
from harmosearch.config.sections import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    GLOBAL_ONLY_REGIONS,
    MAX_SCENES,
    SHAPES_MODEL,
    Config,
    Distractor,
    EncoderConfig,
    IndexConfig,
    Loss,
    MediaConfig,
    PathsConfig,
    RayConfig,
    RegionConfig,
    SearchConfig,
    SynthConfig,
    TrainConfig,
)

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "ENVIRONMENT",
    "GLOBAL_ONLY_REGIONS",
    "MAX_SCENES",
    "SHAPES_MODEL",
    "Config",
    "Device",
    "Distractor",
    "EncoderConfig",
    "Fraction",
    "IndexConfig",
    "Loss",
    "MediaConfig",
    "NonEmpty",
    "NonNegative",
    "PathsConfig",
    "Positive",
    "Precision",
    "Range",
    "RayConfig",
    "RegionConfig",
    "SearchConfig",
    "Section",
    "Seed",
    "SynthConfig",
    "TrainConfig",
    "Workers",
    "config_from_dict",
    "load_config",
    "nest",
    "parse_weights",
    "shapes_model_unless_named",
]
