"""Compacter's parameterized hypercomplex multiplication (PHM) layer (Karimi Mahabadi et al. 2021),
which replaces a bottleneck's down- and up-projections when ``phm_layer`` is set.

The weight of an ``in x out`` projection is a sum of ``n = phm_dim`` Kronecker products,
``H = sum_i kron(rule_i, W_i)`` with ``rule_i`` ``n x n`` and ``W_i`` ``in/n x out/n``, and
``y = x H + b``: about ``1/n`` of a Linear's parameters, fewer still with ``W_i`` factorized as
``W_left_i W_right_i`` of rank ``phm_rank``. The rules (and, with ``shared_W_phm``, the ``W``
factors) can be shared by every PHM layer of an adapter: they then live once per adapter in
``<base model>.shared_parameters.<name>``, AdapterHub's place, so its files load as they are.
Parameter names (``W_left``, ``W_right``, ``W``, ``b``, ``phm_rule``, ``phm_rule_left``,
``phm_rule_right``, ``W_down_left`` ...) are AdapterHub's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import BnConfig

SHARED = "shared_parameters"  # the ModuleDict on the base model: one PHMShared per adapter


class PHMShared(nn.Module):
    """Tensors of one adapter that all its PHM layers use. A rule that ``learn_phm=False``
    keeps fixed is a buffer: saved under the same name, never trained."""

    def __init__(self, config: BnConfig, hidden_size: int, bottleneck_size: int):
        super().__init__()
        self.config = config
        n = config.phm_dim
        if config.shared_phm_rule:
            _add_rules(self, config)
        if config.shared_W_phm:
            for position, (fan_in, fan_out) in (("down", (hidden_size, bottleneck_size)),
                                                ("up", (bottleneck_size, hidden_size))):
                for key, shape in _w_shapes(config, fan_in // n, fan_out // n).items():
                    self.register_parameter(f"W_{position}{key}", nn.Parameter(torch.empty(n, *shape)))

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)

    @torch.no_grad()
    def init_(self, generator=None) -> None:
        """AdapterHub's shared init: rules normal(0, phm_init_range) or uniform(-1, 1)."""
        if self.config.shared_phm_rule:
            _init_rules(self, self.config, generator, std=self.config.phm_init_range, bound=1.0)
        if self.config.shared_W_phm:
            _init_w(self, self.config, ("W_down", "W_up"), generator)


def _w_shapes(config: BnConfig, rows: int, cols: int) -> dict[str, tuple[int, int]]:
    if config.factorized_phm_W:
        return {"_left": (rows, config.phm_rank), "_right": (config.phm_rank, cols)}
    return {"": (rows, cols)}


def _rule_shapes(config: BnConfig) -> dict[str, tuple[int, int, int]]:
    n = config.phm_dim
    if config.factorized_phm_rule:
        return {"phm_rule_left": (n, n, 1), "phm_rule_right": (n, 1, n)}
    return {"phm_rule": (n, n, n)}


def _add_rules(module: nn.Module, config: BnConfig) -> None:
    for key, shape in _rule_shapes(config).items():
        if config.learn_phm:
            module.register_parameter(key, nn.Parameter(torch.empty(shape)))
        else:
            module.register_buffer(key, torch.empty(shape))


def _init_rules(module: nn.Module, config: BnConfig, generator, std: float, bound: float) -> None:
    for key in _rule_shapes(config):
        rule = getattr(module, key)
        if config.phm_c_init == "uniform":
            rule.uniform_(-bound, bound, generator=generator)
        else:
            rule.normal_(0.0, std, generator=generator)


def _init_w(module: nn.Module, config: BnConfig, prefixes, generator) -> None:
    """Each ``W_i`` (or factor) as ``hypercomplex_nonlinearity`` names: glorot-uniform, glorot-normal
    (also ``phm``) or normal(0, phm_init_range). AdapterHub 1.3 always draws glorot-normal whatever
    the name (FACTS.md); the init is not part of a trained file, so ours follows the name."""
    for prefix in prefixes:
        for key in _w_shapes(config, 1, 1):
            weight = getattr(module, prefix + key)
            for i in range(config.phm_dim):
                if config.hypercomplex_nonlinearity == "glorot-uniform":
                    nn.init.xavier_uniform_(weight[i], generator=generator)
                elif config.hypercomplex_nonlinearity == "normal":
                    weight[i].normal_(0.0, config.phm_init_range, generator=generator)
                else:
                    nn.init.xavier_normal_(weight[i], generator=generator)


def kron_sum(rule: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_i kron(rule_i, w_i)`` for rule (n, a, b) and w (n, c, d): an (a*c, b*d) matrix."""
    _, a, b = rule.shape
    _, c, d = w.shape
    return torch.einsum("nab,ncd->acbd", rule, w).reshape(a * c, b * d)


class PHMLayer(nn.Module):
    """A PHM projection ``in_features -> out_features`` at ``position`` "down" or "up" of an
    adapter; ``shared`` is the adapter's ``PHMShared`` (held by reference, not as a child: it is
    saved once, at the base model)."""

    def __init__(self, config: BnConfig, in_features: int, out_features: int, position: str,
                 shared: PHMShared | None):
        super().__init__()
        self.config = config
        self.position = position
        self.__dict__["shared"] = shared
        n = config.phm_dim
        if not config.shared_phm_rule:
            _add_rules(self, config)
        if not config.shared_W_phm:
            for key, shape in _w_shapes(config, in_features // n, out_features // n).items():
                self.register_parameter(f"W{key}", nn.Parameter(torch.empty(n, *shape)))
        self.b = nn.Parameter(torch.zeros(out_features)) if config.phm_bias else None

    @torch.no_grad()
    def init_(self, generator=None) -> None:
        """AdapterHub's init of a PHM layer's own tensors: rules normal(0, 0.01) or uniform(-0.01,
        0.01), ``W`` as ``hypercomplex_nonlinearity`` says, bias zero."""
        if not self.config.shared_phm_rule:
            _init_rules(self, self.config, generator, std=0.01, bound=0.01)
        if not self.config.shared_W_phm:
            _init_w(self, self.config, ("W",), generator)
        if self.b is not None:
            self.b.zero_()

    def _tensor(self, key: str) -> torch.Tensor:
        shared = self.config.shared_phm_rule if key.startswith("phm_rule") else self.config.shared_W_phm
        return self.shared[key] if shared else getattr(self, key)

    def _w_name(self, suffix: str) -> str:
        return f"W_{self.position}{suffix}" if self.config.shared_W_phm else f"W{suffix}"

    def weight_matrix(self) -> torch.Tensor:
        """``H`` (in, out), so that ``y = x H + b``."""
        if self.config.factorized_phm_W:
            w = torch.bmm(self._tensor(self._w_name("_left")), self._tensor(self._w_name("_right")))
        else:
            w = self._tensor(self._w_name(""))
        if self.config.factorized_phm_rule:
            rule = torch.bmm(self._tensor("phm_rule_left"), self._tensor("phm_rule_right"))
        else:
            rule = self._tensor("phm_rule")
        return kron_sum(rule, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight_matrix()
        return y + self.b if self.b is not None else y

    @torch.no_grad()
    def zero_(self) -> None:
        """Output exactly ``b`` (zero at init): the last ``W`` factor zeroed, so that gradients
        still reach it (as LoRA's zero B)."""
        self._tensor(self._w_name("_right" if self.config.factorized_phm_W else "")).zero_()
