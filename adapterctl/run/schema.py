"""Types of the ``trainer`` group's keys, so a wrong value (``trainer.max_steps=abc``) is a
one-line error when the config is composed, not a traceback in the middle of training.
The values and their comments live in ``conf/trainer/default.yaml``; this says only what
type each key takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
