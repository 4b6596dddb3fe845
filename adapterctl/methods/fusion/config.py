"""AdapterFusion's config: AdapterHub's fields, its ``dynamic`` and ``static`` presets, and loading.

Torch-free, like every config. ``dynamic`` (the default) learns a value matrix; ``static`` has
none. Fields and defaults are AdapterHub's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import AdapterConfigError


@dataclass(frozen=True)
class FusionConfig:
    key: bool
    query: bool
    value: bool
    query_before_ln: bool
    regularization: bool
    residual_before: bool
    temperature: bool
    value_before_softmax: bool
    value_initialized: Any  # AdapterHub writes True/False (or a legacy string); truthy = near-identity init
    dropout_prob: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "FusionConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise AdapterConfigError(f"unknown fusion config field(s) {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)


FUSION_PRESETS = {
    "static": FusionConfig(
        key=True, query=True, value=False, query_before_ln=False, regularization=False, residual_before=False,
        temperature=False, value_before_softmax=True, value_initialized=False,
    ),
    "dynamic": FusionConfig(
        key=True, query=True, value=True, query_before_ln=False, regularization=True, residual_before=False,
        temperature=False, value_before_softmax=True, value_initialized=True,
    ),
}


def load_fusion_config(spec: Any = "dynamic", **overrides) -> FusionConfig:
    """A preset name (``dynamic``/``static``), a dict, a ``FusionConfig`` or a JSON file path."""
    if isinstance(spec, FusionConfig):
        config = spec
    elif isinstance(spec, Mapping):
        d = dict(spec)
        preset = d.pop("preset", None)
        if preset:
            config = load_fusion_config(preset).replace(**d)
        else:
            fields = {f.name for f in dataclasses.fields(FusionConfig)}
            unknown = set(d) - fields
            if unknown:
                raise AdapterConfigError(f"unknown fusion config field(s) {', '.join(sorted(unknown))}")
            try:
                config = FusionConfig(**d)
            except TypeError as e:
                raise AdapterConfigError(f"incomplete fusion config ({e}); start from 'dynamic' or 'static'") from None
    elif isinstance(spec, (str, Path)) and str(spec).endswith(".json"):
        data = json.loads(Path(spec).read_text())
        config = load_fusion_config(data.get("config", data))
    elif isinstance(spec, str) and spec in FUSION_PRESETS:
        config = FUSION_PRESETS[spec]
    else:
        raise AdapterConfigError(f"unknown fusion config {spec!r}; choose one of {', '.join(FUSION_PRESETS)}")
    return config.replace(**overrides) if overrides else config
