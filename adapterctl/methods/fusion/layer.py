"""AdapterFusion (Pfeiffer et al. 2021): attention over the outputs of several adapters.

At every adapter layer the layer's hidden state is the query; each fused adapter's
up-projection output is a key and a value. ``dynamic`` (the default) learns a value matrix,
initialized near the identity and pulled towards it by a regularization loss during fusion
training; ``static`` has no value matrix. Fusion composes bottleneck adapters only, as in
AdapterHub (``methods/bottleneck/layer.py`` runs it inside a ``Fuse`` block).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
import torch.nn as nn

from .config import FusionConfig

_RECORD: ContextVar[dict | None] = ContextVar("adapterctl_fusion_attentions", default=None)


@contextlib.contextmanager
def recording_attentions():
    """Within the block (this thread only), every fusion layer that runs keeps its attention
    over the fused adapters: yields ``{fusion module: probs (B, T, N)}``, detached."""
    record: dict = {}
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)


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
        record = _RECORD.get()
        if record is not None:
            record[self] = probs.detach()
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
