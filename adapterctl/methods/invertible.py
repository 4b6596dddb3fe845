"""Invertible adapters (MAD-X, Pfeiffer et al. 2020): a language adapter's own block at the embeddings.

A MAD-X language adapter (``pfeiffer+inv``, ``houlsby+inv``) adds, beside its bottlenecks, an
invertible coupling block applied to the embedding output; only the active setup's *first*
adapter's block runs (the language adapter at the bottom of ``Stack(lang, task)``), so swapping
the language adapter swaps the block too. The inverse (``rev=True``) maps hidden states back to
the embedding space, for tied output embeddings of a language-modelling head.

Weight names are AdapterHub's: ``<prefix>.invertible_adapters.<name>.F.0.weight`` (NICE) and
``...s1.0.weight`` (GLOW), ``<prefix>.encoder.invertible_adapters...`` on encoder-decoders, so its
MAD-X language adapters load here. LM heads run the inverse before their vocabulary projection
(``inverse``), as AdapterHub's do.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..core import composition as C
from ..core.activation import Activation
from ..core.context import Rows
from ..errors import AdapterConfigError
from .base import init_generator, rows_grouped
from .bottleneck.config import BnConfig


def _subnet(d_in: int, d_out: int, non_linearity: str, reduction_factor: float) -> nn.Sequential:
    hidden = int(d_in // reduction_factor)
    return nn.Sequential(nn.Linear(d_in, hidden), Activation(non_linearity), nn.Linear(hidden, d_out))


class NICECoupling(nn.Module):
    """Additive coupling on the two halves of the hidden vector: y1 = x1 + F(x2), y2 = x2 + G(y1)."""

    def __init__(self, hidden_size: int, non_linearity: str, reduction_factor: float):
        super().__init__()
        self.split = hidden_size // 2
        self.F = _subnet(hidden_size - self.split, self.split, non_linearity, reduction_factor)
        self.G = _subnet(self.split, hidden_size - self.split, non_linearity, reduction_factor)

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[..., : self.split], x[..., self.split:]
        if not rev:
            y1 = x1 + self.F(x2)
            y2 = x2 + self.G(y1)
        else:
            y2 = x2 - self.G(x1)
            y1 = x1 - self.F(y2)
        return torch.cat((y1, y2), -1)

    def last_layers(self):
        return self.F[-1], self.G[-1]


class GLOWCoupling(nn.Module):
    """Affine coupling (GLOW, as in the FrEIA library): y1 = e(s2(x2)) * x1 + t2(x2), then
    y2 = e(s1(y1)) * x2 + t1(y1), with e a soft-clamped exponential.

    AdapterHub 1.3's GLOW block slices the sequence axis of (batch, seq, hidden) inputs and
    returns a list, so it cannot run on a transformer's embeddings; this is the coupling it was
    meant to be, with its weight names and shapes (``s1``: half 1 -> 2 x half 2, ``s2``: the
    other way round)."""

    def __init__(self, hidden_size: int, non_linearity: str, reduction_factor: float, clamp: float = 5.0):
        super().__init__()
        self.split = hidden_size // 2
        rest = hidden_size - self.split
        self.clamp = clamp
        self.s1 = _subnet(self.split, 2 * rest, non_linearity, reduction_factor)
        self.s2 = _subnet(rest, 2 * self.split, non_linearity, reduction_factor)

    def _e(self, s: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.clamp * 0.636 * torch.atan(s / self.clamp))

    def forward(self, x: torch.Tensor, rev: bool = False) -> torch.Tensor:
        x1, x2 = x[..., : self.split], x[..., self.split:]
        rest = x.shape[-1] - self.split
        if not rev:
            s2, t2 = self.s2(x2).split([self.split, self.split], -1)
            y1 = self._e(s2) * x1 + t2
            s1, t1 = self.s1(y1).split([rest, rest], -1)
            y2 = self._e(s1) * x2 + t1
        else:
            s1, t1 = self.s1(x1).split([rest, rest], -1)
            y2 = (x2 - t1) / self._e(s1)
            s2, t2 = self.s2(y2).split([self.split, self.split], -1)
            y1 = (x1 - t2) / self._e(s2)
        return torch.cat((y1, y2), -1)

    def last_layers(self):
        return self.s1[-1], self.s2[-1]


BLOCKS = {"nice": NICECoupling, "glow": GLOWCoupling}


def build(config: BnConfig, hidden_size: int) -> nn.Module:
    """The coupling block of a config with ``inv_adapter``. With our default ``identity`` init
    the last layers start at zero, so the block starts as the identity like the bottlenecks;
    AdapterHub's inits draw every weight from N(0, 0.02)."""
    block = BLOCKS[config.inv_adapter](hidden_size, config.non_linearity, config.inv_adapter_reduction_factor or 2)
    generator = init_generator(config.init_weights_seed)
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02, generator=generator)
                module.bias.zero_()
        if config.init_weights == "identity":
            for last in block.last_layers():
                last.weight.zero_()
    return block


class InvertibleAdapters(nn.ModuleDict):
    """The invertible blocks of all adapters, at the base model (``invertible_adapters``);
    a forward hook on the embeddings runs the active setup's first adapter's block."""

    def __init__(self, context):
        super().__init__()
        self.context = context  # the model's AdapterContext: the pass in flight

    def attach(self, embeddings: nn.Module) -> None:
        embeddings.register_forward_hook(lambda module, args, output: self(output))

    def active(self) -> nn.Module | None:
        setup = self.context.state.setup
        if setup is None:
            return None
        entries = _entry_adapters(setup)
        if len(entries) > 1 and any(name in self for name in entries):
            raise AdapterConfigError(
                f"{setup!r}: its Parallel branches start with different adapters ({', '.join(sorted(entries))}), "
                "and an invertible (MAD-X) block runs once at the embeddings, for all branches; start every branch "
                "with the same language adapter"
            )
        return self[setup.first()] if setup.first() in self else None

    def forward(self, hidden: torch.Tensor, rev: bool = False) -> torch.Tensor:
        setup = self.context.state.setup
        if isinstance(setup, Rows):  # a mixed batch: each row through its own adapter's block
            return rows_grouped(setup, self, hidden.clone(), lambda name, idx: self[name](hidden[idx], rev=rev))
        block = self.active()
        return hidden if block is None else block(hidden, rev=rev)


def owner(backbone: nn.Module, family) -> nn.Module:
    """The module that holds ``invertible_adapters``: the base model, an encoder-decoder's encoder."""
    return backbone.get_submodule(family.invertible_owner) if family.invertible_owner else backbone


def inverse(backbone: nn.Module, family, hidden: torch.Tensor) -> torch.Tensor:
    """``hidden`` mapped back through the active setup's invertible block (``rev=True``); itself
    when there is none. AdapterHub's LM heads do this before their vocabulary projection, so a
    language adapter's block and its tied output embeddings stay inverse to each other."""
    blocks = getattr(owner(backbone, family), "invertible_adapters", None)
    return hidden if blocks is None else blocks(hidden, rev=True)


def _entry_adapters(setup) -> set[str]:
    """The adapters a setup starts with: one per Parallel branch, else its first."""
    if isinstance(setup, str):
        return {setup}
    if isinstance(setup, C.Parallel):
        return set().union(*(_entry_adapters(child) for child in setup))
    return _entry_adapters(setup.children[0])
