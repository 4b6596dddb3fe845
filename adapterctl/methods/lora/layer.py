"""LoRA, DoRA and (IA)^3 modules, and the layer that runs them (and VeRA's, ``vera.py``) after
one projection.

Weight names and the composition semantics are AdapterHub's (``methods/lora.py`` of
``adapters`` 1.3): ``<projection>.loras.<name>.lora_A`` (r x in) and ``.lora_B`` (out x r) for
LoRA, plus ``.m.weight`` (out x 1) for DoRA, ``.lora_B`` (out x 1) for IA3. On a fused
projection (GPT-2's ``c_attn``: q | k | v side by side) an adapter adapts the slices its
``attn_matrices`` name, each by its own rank-r pair as AdapterHub's ``LoRAMergedLinear`` does:
``lora_A`` (r * n x in), ``lora_B`` (out / 3 * n x r) for n slices; the math below reads them
through ``up()`` / ``vector()``, which place them in the projection's columns. Through a
composition flows ``hidden``: the first adapter reads the projection's input ``x`` (LoRA:
``alpha / r * B A x``; IA3: ``alpha * b``), a stacked one reads the previous one's ``hidden``,
and at the end the last adapter combines it with the projection's output (add, or multiply for
IA3).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from transformers.pytorch_utils import Conv1D

from ...core import composer
from ...core.composition import Stack
from ...core.context import Rows
from ...errors import AdapterConfigError
from ...families.hooks import attach_projection
from ..base import ComposableLayer, init_generator, rows_grouped
from .config import LoRAConfig


def features(projection: nn.Module) -> tuple[int, int]:
    """(in, out) of a Linear or of a Conv1D (GPT-2's, whose weight is stored (in, out))."""
    if isinstance(projection, Conv1D):
        return projection.weight.shape[0], projection.weight.shape[1]
    return projection.in_features, projection.out_features


def weight_of(projection: nn.Module) -> torch.Tensor:
    """The projection's weight as (out, in); a Conv1D's transposed view (in-place ops reach it)."""
    return projection.weight.t() if isinstance(projection, Conv1D) else projection.weight


class _Slices(nn.Module):
    """Where the outputs of an adapter on a fused projection go: the rows (of ``out``) of the
    slices it adapts, as a non-saved index buffer. ``groups``: the output is laid out per
    attention head, each head's q | k | v side by side (GPT-NeoX); 1: q | k | v (GPT-2)."""

    def __init__(self, slices: tuple[bool, ...] | None, out_features: int, groups: int = 1):
        super().__init__()
        self.slices = slices
        self.out_features = out_features
        if slices is not None:
            width = out_features // (len(slices) * groups)  # one slice of one group
            rows = [g * len(slices) * width + s * width + i
                    for s, on in enumerate(slices) if on for g in range(groups) for i in range(width)]
            self.register_buffer("rows", torch.tensor(rows), persistent=False)

    @property
    def n(self) -> int:
        return sum(self.slices) if self.slices is not None else 1

    def width(self, out_features: int) -> int:
        return out_features // len(self.slices) * self.n if self.slices is not None else out_features

    def place(self, part: torch.Tensor, fill: float) -> torch.Tensor:
        """``part`` (rows of the adapted slices first) into a tensor of ``out_features`` rows."""
        if self.slices is None:
            return part
        full = part.new_full((self.out_features, *part.shape[1:]), fill)
        return full.index_copy(0, self.rows, part)


def fused_rows(slices: int, out_features: int, groups: int = 1) -> torch.Tensor:
    """The output rows of a fused projection in the order an adapter on all its ``slices`` holds
    them (slice by slice; PEFT's one pair holds them in the output's own order)."""
    return _Slices((True,) * slices, out_features, groups).rows


class LowRank(nn.Module):
    """What LoRA and VeRA share: an update ``alpha / r * U x`` added to the projection's output,
    dropout on its input, AdapterHub's gate, and DoRA's magnitude ``m`` (``use_dora``), which
    rescales the whole output row-wise: ``m / ||W + U||_row * (W x + b + alpha / r * U x)``
    (AdapterHub's form: the norm takes ``U`` unscaled and the bias is inside), or with
    ``dora_variant="peft"`` all but the bias, by ``m / ||W + alpha / r * U||_row`` with the norm
    detached from the gradient (PEFT's form, after the DoRA paper's section 4.3)."""

    def __init__(self, config: LoRAConfig, linear: nn.Module):
        super().__init__()
        self.scaling = config.alpha / config.r
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.gate = _gate(config, features(linear)[0])
        self.m = magnitude(weight_of(linear), config.dtype) if config.use_dora else None
        self.peft_dora = config.dora_variant == "peft"
        self._merged_scale: torch.Tensor | None = None  # DoRA's row scale while merged

    @property
    def delta_w(self) -> torch.Tensor:
        """``U`` (out x in), unscaled."""
        raise NotImplementedError

    def low_rank(self, x: torch.Tensor) -> torch.Tensor:
        """``U x`` without forming ``U``."""
        raise NotImplementedError

    @property
    def plain(self) -> bool:
        """A plain LoRA update (no gate, no DoRA): the fused single-adapter path can run it."""
        return False

    def forward(self, hidden: torch.Tensor | None, layer_input: torch.Tensor) -> torch.Tensor:
        x = layer_input if hidden is None else hidden
        out = self.low_rank(self.dropout(x))
        return out * _gate_value(self.gate, layer_input) if self.gate is not None else out * self.scaling

    def combine(self, output: torch.Tensor, hidden: torch.Tensor, linear: nn.Module) -> torch.Tensor:
        if self.m is None:
            return output + hidden
        scale = self.dora_scale(weight_of(linear))
        if self.peft_dora and linear.bias is not None:
            return scale * (output - linear.bias + hidden) + linear.bias
        return scale * (output + hidden)

    def dora_scale(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.peft_dora:
            return self.m.weight.view(-1) / torch.linalg.norm(weight + self.delta_w.to(weight.dtype), dim=1)
        norm = torch.linalg.norm(weight + self.scaling * self.delta_w.to(weight.dtype), dim=1)
        return self.m.weight.view(-1) / norm.detach()

    def merge_into(self, linear: nn.Module) -> None:
        """``W += s U``; with DoRA ``W = c (W + s U)`` and ``b = c b`` for the row scale ``c``
        (PEFT's variant: ``b`` stays), so the merged layer gives the unmerged outputs
        (AdapterHub's DoRA merge leaves the bias and ignores ``s``, and its reset does not
        restore the weights)."""
        weight = weight_of(linear)
        update = self.scaling * self.delta_w.to(weight.dtype)
        if self.m is None:
            weight += update
            return
        scale = self._merged_scale = self.dora_scale(weight)
        weight.add_(update).mul_(scale[:, None])
        if linear.bias is not None and not self.peft_dora:
            linear.bias.mul_(scale)

    def unmerge_from(self, linear: nn.Module) -> None:
        weight = weight_of(linear)
        update = self.scaling * self.delta_w.to(weight.dtype)
        if self.m is not None:
            scale, self._merged_scale = self._merged_scale, None
            weight.div_(scale[:, None])
            if linear.bias is not None and not self.peft_dora:
                linear.bias.div_(scale)
        weight -= update


class LoRA(LowRank):
    """A low-rank update ``alpha / r * B A``; B starts at zero (``init_weights="lora"``)."""

    def __init__(self, config: LoRAConfig, linear: nn.Module, slices: tuple[bool, ...] | None = None,
                 groups: int = 1):
        super().__init__(config, linear)
        in_features, out_features = features(linear)
        dtype = getattr(torch, config.dtype) if config.dtype else None
        self.fused = _Slices(slices, out_features, groups)
        self.lora_A = nn.Parameter(torch.zeros(config.r * self.fused.n, in_features, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.fused.width(out_features), config.r, dtype=dtype))
        init_pair(self.lora_A, self.lora_B, config)

    def up(self) -> torch.Tensor:
        """B as (out, rank): on a fused projection, block-diagonal (each slice's B reads its own
        r rows of A) and placed in the adapted slices' rows, zero elsewhere."""
        if self.fused.slices is None:
            return self.lora_B
        return self.fused.place(torch.block_diag(*self.lora_B.split(self.lora_B.shape[0] // self.fused.n)), 0.0)

    @property
    def delta_w(self) -> torch.Tensor:
        return self.up() @ self.lora_A

    def low_rank(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A), self.up())

    @property
    def plain(self) -> bool:
        return self.gate is None and self.m is None

def init_pair(a: torch.Tensor, b: torch.Tensor, config: LoRAConfig) -> None:
    """AdapterHub's inits of a pair A, B: ``lora`` (A kaiming-uniform, B zero), ``bert``
    (both N(0, 0.02)), ``ia3`` (ones), ``vera`` (both kaiming-uniform)."""
    generator = init_generator(config.init_weights_seed)
    with torch.no_grad():
        if config.init_weights == "lora":
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            b.zero_()
        elif config.init_weights == "bert":
            for p in (a, b):
                p.normal_(0.0, 0.02, generator=generator)
        elif config.init_weights == "ia3":
            for p in (a, b):
                p.fill_(1.0)
        else:  # vera
            for p in (a, b):
                nn.init.kaiming_uniform_(p, generator=generator)


def magnitude(weight: torch.Tensor, dtype: str | None) -> nn.Linear:
    """DoRA's magnitude (AdapterHub's ``m``, an ``nn.Linear(1, out)`` for its key ``m.weight``),
    starting at the weight's row norms, so a fresh DoRA adapter is an identity."""
    m = nn.Linear(1, weight.shape[0], bias=False, dtype=getattr(torch, dtype) if dtype else None)
    with torch.no_grad():
        m.weight.copy_(torch.linalg.norm(weight.detach(), dim=1, keepdim=True))
    return m


class IA3(nn.Module):
    """(IA)^3: the projection's output scaled by ``alpha * b``; b starts at one. ``on_input``
    (PEFT's ``feedforward_modules``): the projection's input instead, ``W (alpha * b * x) + bias``,
    b (in x 1); computed after the projection as ``out + W ((alpha * b - 1) * x)``, alone only
    (a composition combines outputs)."""

    def __init__(self, config: LoRAConfig, linear: nn.Module, slices: tuple[bool, ...] | None = None,
                 groups: int = 1, on_input: bool = False):
        super().__init__()
        in_features, out_features = features(linear)
        if on_input and slices is not None:
            raise AdapterConfigError("IA3 cannot scale the input of a fused projection (GPT-2's c_attn) for only "
                                     "some of its slices; drop it from feedforward_modules")
        self.on_input = on_input
        self.fused = _Slices(slices, out_features, groups)
        self.lora_B = nn.Parameter(torch.zeros(in_features if on_input else self.fused.width(out_features), 1))
        self.scaling = config.alpha
        self.gate = _gate(config, in_features)
        generator = init_generator(config.init_weights_seed)
        with torch.no_grad():
            if config.init_weights == "ia3":
                self.lora_B.fill_(1.0)
            elif config.init_weights == "bert":
                self.lora_B.normal_(0.0, 0.02, generator=generator)
            # "lora" leaves it at zero, as AdapterHub does

    def vector(self) -> torch.Tensor:
        """b over the whole output (out,): on a fused projection 1 in the slices it leaves alone
        (then scaled by alpha with the rest, as AdapterHub's padding does)."""
        return self.fused.place(self.lora_B, 1.0).view(-1)

    def forward(self, hidden: torch.Tensor | None, layer_input: torch.Tensor) -> torch.Tensor:
        if self.on_input:
            raise AdapterConfigError("an IA3 adapter that scales a projection's input (feedforward_modules) runs "
                                     "alone or merged, not in a composition block; activate it by itself")
        vector = self.vector().view(1, 1, -1).expand(layer_input.shape[0], 1, -1)
        out = vector if hidden is None else hidden * vector
        return out * _gate_value(self.gate, layer_input) if self.gate is not None else out * self.scaling

    @property
    def plain(self) -> bool:
        return self.gate is None and not self.on_input

    def combine(self, output: torch.Tensor, hidden: torch.Tensor, linear: nn.Module) -> torch.Tensor:
        return output * hidden

    def scale_input(self, x: torch.Tensor, out: torch.Tensor, linear: nn.Module) -> torch.Tensor:
        """``on_input``: the output for the input scaled by ``alpha * b``, bias unscaled."""
        return out + F.linear(x * (self.lora_B.view(-1) * self.scaling - 1), weight_of(linear))

    def _factor(self, weight: torch.Tensor) -> torch.Tensor:
        return (self.vector() * self.scaling).to(weight.dtype)

    def merge_into(self, linear: nn.Module) -> None:
        """Scale the weight's rows and the bias: the whole output is scaled (AdapterHub leaves the
        bias unscaled, so its merged outputs differ from its unmerged ones); ``on_input``: the
        weight's columns."""
        weight = weight_of(linear)
        factor = self._factor(weight)
        if self.on_input:
            weight *= factor[None, :]
            return
        weight *= factor[:, None]
        if linear.bias is not None:
            linear.bias *= factor

    def unmerge_from(self, linear: nn.Module) -> None:
        weight = weight_of(linear)
        factor = self._factor(weight)
        if self.on_input:
            weight /= factor[None, :]
            return
        weight /= factor[:, None]
        if linear.bias is not None:
            linear.bias /= factor


def _gate(config: LoRAConfig, in_features: int) -> nn.Linear | None:
    """AdapterHub's gating (UniPELT): a learned sigmoid gate per sequence in place of the scaling."""
    if not config.use_gating:
        return None
    gate = nn.Linear(in_features, 1)
    nn.init.normal_(gate.weight, std=0.02)
    return gate


def _gate_value(gate: nn.Linear, layer_input: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(gate(layer_input)).mean(dim=1).unsqueeze(-1)


def _gatherable(module: LowRank | IA3) -> bool:
    """Whether a mixed batch can run it in the gathered pass: a plain LoRA (no gate, no DoRA;
    VeRA is not a ``LoRA``) or an ungated IA3, and no dropout now. The rest run grouped."""
    dropping = isinstance(getattr(module, "dropout", None), nn.Dropout) and module.training
    return isinstance(module, (LoRA, IA3)) and module.plain and not dropping


class LoRAState(NamedTuple):
    """What flows through a composition at one projection (AdapterHub's ``LoRAState``)."""

    layer_input: torch.Tensor
    hidden: torch.Tensor | None  # None until the first adapter ran
    layer_output: torch.Tensor
    last: str | None


class LoRALayer(ComposableLayer):
    """The LoRA and IA3 adapters of one projection. Their ``loras`` ModuleDict is registered on
    the projection itself (AdapterHub's keys); a forward hook runs them after it, and merging
    folds the merged adapter into its weight and removes the hook."""

    container = "loras"

    def __init__(self, layer_idx: int, context, linear: nn.Linear):
        super().__init__(layer_idx, context)
        # A plain attribute, not a submodule: the projection belongs to the backbone.
        object.__setattr__(self, "linear", linear)
        linear.add_module("loras", self.loras)
        self.merged: str | None = None
        self._handle = attach_projection(linear, context, self.after_projection)

    def after_projection(self, state, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        setup = self.active_setup(state)
        if setup is None:
            return None
        if isinstance(setup, Rows):
            return self.compose_rows(setup, x, out)
        return self._run(setup, x, out)

    def _run(self, setup, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        single = setup[0] if isinstance(setup, Stack) and len(setup) == 1 else setup
        if isinstance(single, str):
            return self._single(self.loras[single], x, out)
        final = composer.compose(self, setup, LoRAState(x, None, out, None))
        return self.loras[final.last].combine(out, final.hidden, self.linear) if final.last is not None else None

    def _single(self, lora: LowRank | IA3, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """One adapter alone, in fewer passes over the batch than the composition: LoRA's update
        is added by the matmul that computes it (``addmm``), IA3 scales in one multiply; in place
        without autograd (``out`` is the projection's own temporary)."""
        grad = torch.is_grad_enabled()
        if isinstance(lora, IA3) and lora.on_input:
            return lora.scale_input(x, out, self.linear)
        if not lora.plain:
            return lora.combine(out, lora(None, x), self.linear)
        if isinstance(lora, IA3):
            factor = lora.vector() * lora.scaling
            return out * factor if grad else out.mul_(factor)
        down = F.linear(lora.dropout(x), lora.lora_A).reshape(-1, lora.lora_A.shape[0])
        up = (lora.up() * lora.scaling).t()
        flat = out.reshape(-1, out.shape[-1])
        return (torch.addmm(flat, down, up) if grad else flat.addmm_(down, up)).view_as(out)

    # -- mixed batches ---------------------------------------------------------------------

    def compose_rows(self, rows: Rows, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Each row through its own adapter. Without gates and dropout, one gathered pass runs
        them all: LoRA's A and B (scaled) and IA3's vectors stacked once (``stacked``), each
        row's slice picked by index, one ``bmm`` and one ``baddbmm`` for the LoRA rows and one
        multiply for the IA3 rows; a row without an adapter here picks the neutral slot (zero
        update, unit scale). Gated or dropping adapters run one group of rows at a time."""
        names = [n for n in rows.flatten() if n in self.loras]
        if x.dim() != 3 or not all(_gatherable(self.loras[n]) for n in names):
            return rows_grouped(rows, self.loras, out, lambda n, idx: self._run(n, x[idx], out[idx]))
        stacked = tuple(n for n, m in self.loras.items() if _gatherable(m))
        a, b, scale = self.stacked("rows", stacked, self._stack)
        idx = rows.index(stacked, out.shape[0], out.device)
        grad = torch.is_grad_enabled()
        if any(isinstance(self.loras[n], IA3) for n in names):
            factor = scale[idx].unsqueeze(1)
            out = out * factor if grad else out.mul_(factor)
        if any(isinstance(self.loras[n], LoRA) for n in names):
            down = torch.bmm(x, a[idx])
            out = torch.baddbmm(out, down, b[idx]) if grad else out.baddbmm_(down, b[idx])
        return out

    def _stack(self, names: tuple[str, ...]):
        """LoRA's A^T (N+1, in, r) and (alpha / r * B)^T (N+1, r, out), ranks padded with zeros
        to the largest, and the output scale (N+1, out): IA3's ``alpha * b``, 1 for LoRA; slot N
        is neutral."""
        modules = [self.loras[n] for n in names]
        r = max((m.lora_A.shape[0] for m in modules if isinstance(m, LoRA)), default=1)
        ref = next(iter(self.loras.values())).lora_B
        in_features, out_features = features(self.linear)
        a0, b0 = ref.new_zeros(in_features, r), ref.new_zeros(r, out_features)
        ones = ref.new_ones(out_features)
        a, b, scale = [], [], []
        for m in modules:  # up() and vector(): over the whole output, also on a fused projection
            if isinstance(m, LoRA):
                pad = r - m.lora_A.shape[0]
                a.append(F.pad(m.lora_A.t(), (0, pad)))
                b.append(F.pad((m.up() * m.scaling).t(), (0, 0, 0, pad)))
                scale.append(ones)
            else:
                a.append(a0)
                b.append(b0)
                scale.append(m.vector() * m.scaling)
        return torch.stack([*a, a0]), torch.stack([*b, b0]), torch.stack([*scale, ones])

    # -- the composer's operations ---------------------------------------------------------

    def compose_single(self, name: str, state: LoRAState) -> LoRAState:
        return state._replace(hidden=self.loras[name](state.hidden, state.layer_input), last=name)

    def concat(self, states: list[LoRAState], dim: int) -> LoRAState:
        """Slices joined; a slice no adapter ran on gets the neutral update (0 to add, 1 to scale)."""
        done = [s for s in states if s.hidden is not None]
        self._one_kind(done, "Parallel / BatchSplit")
        last = next((s.last for s in reversed(states) if s.last), None)
        hidden = None
        if done:
            fill = 1.0 if isinstance(self.loras[last], IA3) else 0.0
            ref = done[0].hidden
            hidden = torch.cat([s.hidden if s.hidden is not None else
                                ref.new_full((*ref.shape[:dim], s.layer_input.shape[dim], *ref.shape[dim + 1:]), fill)
                                for s in states], dim=dim)
        return LoRAState(torch.cat([s.layer_input for s in states], dim=dim), hidden,
                         torch.cat([s.layer_output for s in states], dim=dim), last)

    def mean(self, state: LoRAState, children: list[LoRAState], weights: list[float]) -> LoRAState:
        self._one_kind(children, "Average")
        hidden = sum(w * s.hidden for s, w in zip(children, weights))
        return state._replace(hidden=hidden, last=children[-1].last)

    def _one_kind(self, states: list[LoRAState], block: str) -> None:
        """Branches are joined into one update that the last adapter applies, so at one projection
        they must all end in LoRA (added) or all in IA3 (multiplied); AdapterHub fails here too."""
        names = [s.last for s in states if s.last is not None]
        if len({isinstance(self.loras[n], IA3) for n in names}) > 1:
            raise AdapterConfigError(f"{block} joins {', '.join(map(repr, names))} at one projection, but LoRA adds "
                                     "its update and IA3 scales the output; put adapters of one kind in its branches")

    # -- merging ---------------------------------------------------------------------------

    @torch.no_grad()
    def merge(self, name: str) -> None:
        if self.merged == name:
            return
        if self.merged is not None:
            raise AdapterConfigError(f"{self.merged!r} is merged here already; call reset_adapter() first")
        lora = self.loras[name]
        if lora.gate is not None:
            raise AdapterConfigError(f"{name!r} is a gated LoRA (use_gating=True): its gate depends on the input, "
                                     "so it cannot be merged into the weights")
        lora.merge_into(self.linear)
        self.merged = name
        self._handle.remove()

    @torch.no_grad()
    def reset(self) -> None:
        if self.merged is None:
            return
        self.loras[self.merged].unmerge_from(self.linear)
        self.merged = None
        self._handle = attach_projection(self.linear, self.context, self.after_projection)
