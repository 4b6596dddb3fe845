"""The ``trainer`` settings: every key's type, default and meaning in one place.

``TrainerSettings`` is what ``adapterctl.run.loop.train`` takes in Python, and Hydra's schema
for the CLI's ``trainer`` group (``run/settings.py`` registers it; ``conf/trainer/default.yaml``
only picks it): a value of the wrong type (``trainer.max_steps=abc``) fails when the config is
composed, and ``check`` turns a value out of range (``trainer.batch_size=0``) into one line
before a run folder exists. ``adapterctl train --help`` prints the table from the same fields.

The ``adapter`` group's types come from each registered method's config dataclass
(``adapter_schema``): every field is a key, ``conf/adapter/<preset>.yaml`` gives values.
``run/settings.py`` registers both with Hydra; this module imports neither Hydra nor torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, List, Optional

import omegaconf

from ..errors import AdapterConfigError

# transformers' schedulers that need nothing but the warmup and total steps (the others take
# extra arguments: cosine_with_min_lr, warmup_stable_decay, reduce_lr_on_plateau)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
MIXED_PRECISION = ("no", "fp16", "bf16")
BACKBONE_DROPOUT = ("none", "hidden", "all")


def _key(default, help: str, **kwargs):
    if isinstance(default, type):
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class AdapterDropSettings:
    max_layer: int = _key(0, "robust AdapterDrop: each step drops the adapters of the lowest n layers, n drawn from "
                             "[0, max_layer); 0 = off. Prepares for skip_layers=range(max_layer - 1)")
    p: float = _key(1.0, "the share of steps that drop at all")


@dataclass
class TrainerSettings:
    epochs: int = _key(2, "passes over the train split (max_steps overrides)")
    max_steps: Optional[int] = _key(None, "optimizer steps to take; overrides epochs when set")
    lr: Optional[float] = _key(None, "learning rate; null: the adapter preset's own (adapter.lr: "
                                     "3e-4 to 3e-2 by method, 5e-5 for none)")
    scheduler: str = _key("linear", f"learning-rate schedule: {', '.join(SCHEDULERS)}")
    warmup_ratio: float = _key(0.06, "share of the steps spent warming up, 0..1")
    weight_decay: float = _key(0.0, "AdamW's weight decay")
    batch_size: int = _key(32, "global batch, split across processes")
    eval_batch_size: int = _key(64, "batch for evaluation and predict")
    max_length: int = _key(64, "tokens per row; longer rows are truncated")
    gradient_accumulation_steps: int = _key(1, "batches per optimizer step")
    max_grad_norm: Optional[float] = _key(1.0, "gradient clipping; null: none")
    mixed_precision: str = _key("no", "no | fp16 | bf16")
    gradient_checkpointing: bool = _key(False, "recompute activations in the backward pass (less memory)")
    backbone_dropout: str = _key("none", "the frozen backbone's own dropout when training adapters or fusion: none "
                                         "(faster, as accurate: bench/backbone_dropout.py) | hidden (no attention-"
                                         "probability dropout) | all (as its config says; AdapterHub's behaviour)")
    group_by_length: bool = _key(False, "batches of rows of similar length (less padding): each epoch's order cut into "
                                        "runs of 50 batches, each sorted by length, the batches shuffled")
    eval_steps: Optional[int] = _key(None, "evaluate every n steps; null: at the end of each epoch")
    save_steps: int = _key(100, "checkpoint every n steps (checkpoints/last, also after each evaluation); 0: only "
                                "after evaluations")
    early_stopping_patience: Optional[int] = _key(None, "evaluations without improvement before stopping")
    max_train_samples: Optional[int] = _key(None, "a fixed random slice of the train split (quick runs, CI)")
    max_eval_samples: Optional[int] = _key(None, "a fixed random slice of the validation split")
    adapter_drop: AdapterDropSettings = _key(AdapterDropSettings, "robust AdapterDrop in training")


def _positive(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _optional_positive(v):
    return v is None or _positive(v)


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# key -> (is the value allowed, what to give instead)
RULES = {
    "epochs": (_positive, "a whole number >= 1"),
    "max_steps": (_optional_positive, "a whole number >= 1, or null to use epochs"),
    "lr": (lambda v: v is None or (_finite(v) and v > 0), "a positive number (e.g. 1e-3), or null for the adapter's own"),
    "scheduler": (lambda v: v in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
    "warmup_ratio": (lambda v: _finite(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a number >= 0"),
    "batch_size": (_positive, "a whole number >= 1 (the global batch)"),
    "eval_batch_size": (_positive, "a whole number >= 1"),
    "max_length": (_positive, "a whole number >= 1"),
    "gradient_accumulation_steps": (_positive, "a whole number >= 1 (1: no accumulation)"),
    "max_grad_norm": (lambda v: v is None or (_finite(v) and v > 0), "a positive number, or null for no clipping"),
    "mixed_precision": (lambda v: v in MIXED_PRECISION, f"one of {', '.join(MIXED_PRECISION)}"),
    "backbone_dropout": (lambda v: v in BACKBONE_DROPOUT, f"one of {', '.join(sorted(BACKBONE_DROPOUT))}"),
    "eval_steps": (_optional_positive, "a whole number >= 1, or null for once per epoch"),
    "save_steps": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0"),
    "early_stopping_patience": (_optional_positive, "a whole number >= 1, or null for no early stopping"),
    "max_train_samples": (_optional_positive, "a whole number >= 1, or null for all rows"),
    "max_eval_samples": (_optional_positive, "a whole number >= 1, or null for all rows"),
    "adapter_drop.max_layer": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                               "a whole number >= 0 (0: off)"),
    "adapter_drop.p": (lambda v: _finite(v) and 0 <= v <= 1, "a number from 0 to 1"),
}


def check(settings, prefix: str = "trainer.") -> None:
    """One line naming the first value out of range and what it takes; ``settings`` is a
    ``TrainerSettings`` or the CLI's composed ``trainer`` node."""
    for key, (allowed, wanted) in RULES.items():
        value = settings
        for part in key.split("."):
            value = getattr(value, part)
        if not allowed(value):
            shown = value if isinstance(value, str) else _show(value)
            raise AdapterConfigError(f"{prefix}{key}={shown} is not allowed: give {wanted}")


def _show(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def describe(cls=TrainerSettings, prefix: str = "trainer.") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every setting, nested ones flattened (for ``--help``)."""
    rows = []
    for f in fields(cls):
        if f.default_factory is not MISSING:  # a nested group of settings
            rows += describe(f.default_factory, f"{prefix}{f.name}.")
            continue
        optional = f.type.startswith("Optional[")
        kind = f.type[len("Optional["):-1] if optional else f.type
        rows.append((f"{prefix}{f.name}", kind + (" or null" if optional else ""), _show(f.default),
                     f.metadata.get("help", "")))
    return rows


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

    fields = [(f.name, omega(hints[f.name]), field(default=omegaconf.MISSING)) for f in dataclasses.fields(config_class)]
    fields += [("name", str, field(default=omegaconf.MISSING)), ("preset", str, field(default=omegaconf.MISSING)),
               ("lr", Optional[float], field(default=omegaconf.MISSING))]
    return dataclasses.make_dataclass(f"{config_class.__name__}Schema", fields)
