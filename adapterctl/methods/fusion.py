"""AdapterFusion (Pfeiffer et al. 2021): attention over the outputs of several adapters.

At every adapter layer the layer's hidden state is the query; each fused adapter's
up-projection output is a key and a value. ``dynamic`` (the default) learns a value matrix,
initialized near the identity and pulled towards it by a regularization loss during fusion
training; ``static`` has no value matrix. Fields and defaults are AdapterHub's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import AdapterConfigError


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


def _bert_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()


class Fusion(nn.Module):
    """One fusion layer at one adapter site (AdapterHub's ``BertFusion``, same weight names)."""

    def __init__(self, config: FusionConfig, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.config = config
        self.dropout = nn.Dropout(dropout_prob)
        if not (config.query or config.key or config.value):
            self.dense = nn.Linear(hidden_size, 1)
        if config.query:
            self.query = nn.Linear(hidden_size, hidden_size)
            self.query.apply(_bert_init)
        if config.key:
            self.key = nn.Linear(hidden_size, hidden_size)
            self.key.apply(_bert_init)
        if config.value:
            self.value = nn.Linear(hidden_size, hidden_size, bias=False)
            self.value.apply(_bert_init)
            if config.value_initialized:
                init = torch.full((hidden_size, hidden_size), 1e-6)
                init.fill_diagonal_(1.0)
                self.value.weight.data = init
        self.T = 50.0 if config.temperature else 1.0
        self.reduction = self.T / 1000.0

    def forward(self, query, up_outputs, residual):
        """``query`` (B, T, H); ``up_outputs`` (B, T, N, H), one per fused adapter; ``residual`` (B, T, H)."""
        key = value = up_outputs
        if self.config.residual_before:
            value = value + residual[:, :, None, :]
        q = self.query(query) if self.config.query else query
        k = self.key(key) if self.config.key else key
        v = self.value(value) if self.config.value and self.config.value_before_softmax else value
        scores = torch.matmul(q.unsqueeze(2), k.transpose(-2, -1)).squeeze(2)  # (B, T, N)
        probs = torch.softmax(self.dropout(scores) / self.T, dim=-1)
        if self.training:  # temperature annealing, one step per training forward
            self.T = max(self.T - self.reduction, 1.0)
        context = torch.matmul(probs.unsqueeze(2), v).squeeze(2)
        if self.config.value and not self.config.value_before_softmax:
            context = self.value(context)
        if not self.config.residual_before:
            context = context + residual
        return context

    def regularization_loss(self) -> torch.Tensor | None:
        """0.01 * ||I - V||^2: keeps the value matrix near the identity (dynamic fusion)."""
        if not (self.config.value and self.config.regularization):
            return None
        w = self.value.weight
        return 0.01 * (torch.eye(w.shape[0], device=w.device, dtype=w.dtype) - w).pow(2).sum()
