"""VeRA (Kopiczko et al. 2024, AdapterHub's ``vera`` preset): LoRA's update with random, frozen
A and B shared by all projections of an adapter, and per projection two trained matrices that
start as diagonals: ``alpha / r * vera_B B vera_D A x`` with ``vera_D = diag(vera_d)`` (r x r)
and ``vera_B = diag(vera_b)`` (out x out).

AdapterHub's names and shapes: ``<projection>.loras.<name>.vera_D``, ``.vera_B`` (full matrices,
so VeRA on bert-base counts 14,169,600 parameters there and here) and, once per adapter,
``<prefix>.shared_parameters.<name>.lora_A`` / ``.lora_B``, sized for the widest adapted
projection (each projection takes its corner). ``vera_b=0.0`` makes a fresh adapter an identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LoRAConfig
from .layer import LowRank, features, init_pair


class SharedMatrices(nn.Module):
    """One adapter's random A (r x in) and B (out x r), frozen: ``train_adapter`` trains the
    adapter's modules, and these stay as drawn (AdapterHub's ``init_shared_vera_parameters``)."""

    def __init__(self, config: LoRAConfig, in_features: int, out_features: int):
        super().__init__()
        dtype = getattr(torch, config.dtype) if config.dtype else None
        self.lora_A = nn.Parameter(torch.zeros(config.r, in_features, dtype=dtype), requires_grad=False)
        self.lora_B = nn.Parameter(torch.zeros(out_features, config.r, dtype=dtype), requires_grad=False)
        init_pair(self.lora_A, self.lora_B, config)

    def requires_grad_(self, requires_grad: bool = True) -> "SharedMatrices":
        return self  # frozen random projections: what VeRA trains is vera_D and vera_B


class VeRA(LowRank):
    def __init__(self, config: LoRAConfig, linear: nn.Module, shared: SharedMatrices):
        super().__init__(config, linear)
        in_features, out_features = features(linear)
        dtype = getattr(torch, config.dtype) if config.dtype else None
        self.vera_D = nn.Parameter(torch.diag(torch.full((config.r,), float(config.vera_d), dtype=dtype)))
        self.vera_B = nn.Parameter(torch.diag(torch.full((out_features,), float(config.vera_b), dtype=dtype)))
        object.__setattr__(self, "shared", shared)  # not a submodule: saved once, under shared_parameters
        self.shape = (out_features, in_features)

    @property
    def lora_A(self) -> torch.Tensor:
        return self.shared.lora_A[:, : self.shape[1]]

    @property
    def lora_B(self) -> torch.Tensor:
        return self.shared.lora_B[: self.shape[0]]

    @property
    def delta_w(self) -> torch.Tensor:
        return self.vera_B @ self.lora_B @ self.vera_D @ self.lora_A

    def low_rank(self, x: torch.Tensor) -> torch.Tensor:
        down = F.linear(F.linear(x, self.lora_A), self.vera_D)
        return F.linear(F.linear(down, self.lora_B), self.vera_B)
