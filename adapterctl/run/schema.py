"""Types of the ``trainer`` group's keys, so a wrong value (``trainer.max_steps=abc``) is a
one-line error when the config is composed, not a traceback in the middle of training.
The values and their comments live in ``conf/trainer/default.yaml``; this says only what
type each key takes. The ``adapter`` group's types come from each registered method's config
dataclass (``adapter_schema``): every field is a key, ``conf/adapter/<preset>.yaml`` gives values."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ..core import registry


@dataclass
class AdapterDropSchema:
    max_layer: int = MISSING
    p: float = MISSING


@dataclass
class TrainerSchema:
    epochs: int = MISSING
    max_steps: Optional[int] = MISSING
    lr: Optional[float] = MISSING
    scheduler: str = MISSING
    warmup_ratio: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    max_length: int = MISSING
    gradient_accumulation_steps: int = MISSING
    max_grad_norm: Optional[float] = MISSING
    mixed_precision: str = MISSING
    gradient_checkpointing: bool = MISSING
    backbone_dropout: str = MISSING
    eval_steps: Optional[int] = MISSING
    save_steps: int = MISSING
    early_stopping_patience: Optional[int] = MISSING
    max_train_samples: Optional[int] = MISSING
    max_eval_samples: Optional[int] = MISSING
    adapter_drop: AdapterDropSchema = field(default_factory=AdapterDropSchema)


ConfigStore.instance().store(group="trainer", name="schema", node=TrainerSchema)


def adapter_schema(config_class: type) -> type:
    """The ``adapter`` group's keys for one method: its config's fields, typed as the dataclass
    says where OmegaConf can check the type (unions and mappings are ``Any``), plus name,
    preset and lr."""
    hints = typing.get_type_hints(config_class)

    def omega(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if tp in (bool, int, float, str):
            return tp
        if tp in (tuple, list):
            return List[Any]
        if len(args) == 1 and args[0] in (bool, int, float, str):
            return Optional[args[0]]
        return Any

    fields = [(f.name, omega(hints[f.name]), field(default=MISSING)) for f in dataclasses.fields(config_class)]
    fields += [("name", str, field(default=MISSING)), ("preset", str, field(default=MISSING)),
               ("lr", Optional[float], field(default=MISSING))]
    return dataclasses.make_dataclass(f"{config_class.__name__}Schema", fields)


for _name, _spec in registry.methods().items():
    ConfigStore.instance().store(group="schema/adapter", name=_name, node=adapter_schema(_spec.config_class))
