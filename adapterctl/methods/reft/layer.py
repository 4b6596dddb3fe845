"""ReFT's modules: a unit (one intervention) and the module that applies an adapter's units to
the chosen positions of one layer's output.

Weight names are AdapterHub's (``methods/reft.py`` of ``adapters`` 1.3):
``<layer>.reft_layer.refts.<name>.units.<i>.learned_source.{weight,bias}`` and
``.projection.weight``, or with ``orthogonality`` torch's orthogonal parametrization
(``.projection.parametrizations.weight.original`` and its buffer ``...weight.0.base``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...core.activation import Activation
from ..base import seeded
from .config import ReftConfig


class ReftUnit(nn.Module):
    """``x + (act(W x + b) - R x) R^T`` (without ``- R x`` for DiReFT), then dropout."""

    def __init__(self, config: ReftConfig, hidden_size: int):
        super().__init__()
        dtype = getattr(torch, config.dtype) if config.dtype else None
        self.learned_source = nn.Linear(hidden_size, config.r, dtype=dtype)
        projection = nn.Linear(hidden_size, config.r, bias=False, dtype=dtype)
        if config.orthogonality:  # torch's parametrization needs float32 or wider
            projection = nn.utils.parametrizations.orthogonal(projection.float())
        self.projection = projection
        self.subtract_projection = config.subtract_projection
        self.non_linearity = Activation(config.non_linearity) if config.non_linearity else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = self.non_linearity(self.learned_source(x.to(self.learned_source.weight.dtype)))
        weight = self.projection.weight
        if self.subtract_projection:
            source = source - x.to(weight.dtype) @ weight.t()
        return self.dropout(x + (source.to(weight.dtype) @ weight).to(x.dtype))


class Reft(nn.Module):
    """One adapter's units at one layer: unit 0 on the prefix positions, unit 1 on the suffix
    positions (one unit for both if ``tied_weights``). Its units compute in their own dtype
    (``dtype``, else float32: torch's orthogonal parametrization needs it) whatever the
    backbone's, and give the hidden states back in theirs."""

    keeps_dtype = True  # AdapterModel.like_model leaves its dtype alone

    def __init__(self, config: ReftConfig, hidden_size: int):
        super().__init__()
        self.prefix_positions, self.suffix_positions = config.prefix_positions, config.suffix_positions
        with seeded(config.init_weights_seed):
            self.units = nn.ModuleList(ReftUnit(config, hidden_size) for _ in range(1 if config.tied_weights else 2))

    def forward(self, hidden: torch.Tensor, first: torch.Tensor, end: torch.Tensor, start: int) -> torch.Tensor:
        """``hidden`` holds positions ``start ..`` of the sequences (``start`` > 0: later steps of
        cached generation); row i's real tokens are ``first[i] .. end[i] - 1``. Positions before
        this chunk were intervened on when they were computed."""
        rows, length, size = hidden.shape
        total = start + length  # a later chunk may still hold some of the first positions
        steps = torch.arange(total, device=hidden.device)
        places = []
        if self.prefix_positions:
            places.append(first[:, None] + steps[:min(self.prefix_positions, total)])
        if self.suffix_positions:
            places.append(end[:, None] - 1 - steps[:min(self.suffix_positions, total)].flip(0))
        places = [p - start for p in places]
        chosen = [p.clamp(0, length - 1)[..., None].expand(-1, -1, size) for p in places]
        states = [hidden.gather(1, index) for index in chosen]
        if len(self.units) == 1:
            adapted = self.units[0](torch.cat(states, dim=1)).split([s.shape[1] for s in states], dim=1)
        else:
            adapted = [self.units[i if self.prefix_positions else 1](s) for i, s in enumerate(states)]
        for where, index, new, old in zip(places, chosen, adapted, states):
            inside = ((where >= 0) & (where < length))[..., None]
            hidden = hidden.scatter(1, index, torch.where(inside, new, old))
        return hidden
