"""AdapterDrop (Rücklé et al., 2021): adapters removed from the lowest layers.

At inference, ``set_active_adapters(..., skip_layers=[0, 1, 2])`` runs those layers without
adapters; with a ``Parallel`` setup the tasks then share the computation of those layers (the
batch is replicated only at the first layer that has adapters), which is where the speed-up
comes from. Adapters trained without dropping lose accuracy when their lowest layers are
skipped; training with ``AdapterDrop`` (the paper's *robust* variant) makes them tolerate it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AdapterConfigError


@dataclass(frozen=True)
class AdapterDrop:
    """In each training forward pass, skip the adapters of layers ``< n``, with ``n`` drawn
    uniformly from ``[0, max_layer)``; with probability ``1 - p`` the pass drops none.

    Train with ``max_layer = k + 1`` to prepare for ``skip_layers=range(k)`` at inference (the
    paper drew n from 0..11 on 12 layers). Draws use torch's global generator, so a seeded run
    repeats. Under DDP, skipped adapters get no gradient in that step: use
    ``find_unused_parameters=True``.
    """

    max_layer: int
    p: float = 1.0

    def __post_init__(self):
        if isinstance(self.max_layer, bool) or not isinstance(self.max_layer, int) or self.max_layer < 1:
            raise AdapterConfigError(f"adapter_drop.max_layer must be an integer >= 1, got {self.max_layer!r}")
        if not 0.0 <= self.p <= 1.0:
            raise AdapterConfigError(f"adapter_drop.p must be a probability in [0, 1], got {self.p!r}")

    def sample(self) -> int:
        """How many of the lowest layers drop their adapters in this pass."""
        if self.p < 1.0 and torch.rand(()).item() >= self.p:
            return 0
        return int(torch.randint(0, self.max_layer, ()).item())
