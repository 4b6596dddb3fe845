"""Bottleneck adapters (Houlsby, Pfeiffer, parallel, Compacter, AdapterPlus) and the layer that runs
them at a residual site.

Placement follows AdapterHub's ``adapters`` 1.x exactly, so its saved adapters give the same
outputs here. At a site the transformer computes ``layer_norm(h + x)`` (``h`` the sub-layer
output, ``x`` the residual stream); with adapters active this becomes:

    pre:   residual = h                        if residual_before_ln is True
           h = layer_norm(h + x)               if original_ln_before (residual = h + x if "post_add")
           residual = h                        if residual_before_ln is False
    adapter: out = up(act(down(ln_before?(h)))) * scaling, dropout, * gate?, + residual, ln_after?
             (adapter_residual_before_ln decides whether the residual joins before ln_after;
             Compacter's up/down are PHM layers (phm.py); the gate is the sequence mean of
             sigmoid(gate(h)) per row; stochastic_depth drops whole rows of up() in training)
    post:  out = layer_norm(out + x)           if original_ln_after

A parallel adapter reads ``x`` instead of ``h`` and its output joins ``h`` before the post step.
At a pre-LN site (Llama, GPT-2: the layer adds ``x + h`` inline) there is no ``layer_norm``:
the pre step adds ``h + x``, and the post step leaves ``x`` to the layer's own add, as
AdapterHub does there with ``layer_norm=None``.
A single active pfeiffer or houlsby adapter takes a shortcut with the same result
(``Bottleneck.fused_step``): fewer passes over the batch keep inference near the bare model's speed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...core import composer
from ...core.activation import Activation
from ...core.composition import Fuse, Stack
from ...core.context import Rows
from ...errors import AdapterConfigError
from ..base import ComposableLayer, init_generator, rows_grouped
from .config import BnConfig
from .phm import PHMLayer, PHMShared


class Bottleneck(nn.Module):
    """One adapter at one site. Weight names match AdapterHub's ``Adapter`` module:
    ``adapter_down.0`` (or ``.1`` after ``adapter_norm_before``), ``adapter_up``; with
    ``phm_layer`` both projections are Compacter's ``PHMLayer`` (``phm.py``), whose shared tensors
    ``shared`` holds; ``gate`` with ``use_gating``."""

    def __init__(self, config: BnConfig, hidden_size: int, bottleneck_size: int, shared: PHMShared | None = None):
        super().__init__()
        self.config = config
        down: list[nn.Module] = []
        if config.ln_before:
            self.adapter_norm_before = nn.LayerNorm(hidden_size)
            down.append(self.adapter_norm_before)
        down += [self._projection(hidden_size, bottleneck_size, "down", shared), Activation(config.non_linearity)]
        self.adapter_down = nn.Sequential(*down)
        self.adapter_up = self._projection(bottleneck_size, hidden_size, "up", shared)
        if config.scaling == "learned":
            self.scaling = nn.Parameter(torch.ones(1))
        elif config.scaling == "channel":
            self.scaling = nn.Parameter(torch.ones(hidden_size))
        else:
            self.scaling = float(config.scaling)
        if config.ln_after:
            self.adapter_norm_after = nn.LayerNorm(hidden_size)
        # UniPELT's gate: the output scaled by the sequence mean of sigmoid(gate(input)), per row
        self.gate = nn.Linear(hidden_size, 1) if config.use_gating else None
        self.dropout = nn.Dropout(config.dropout)
        self._init_weights(config.init_weights, config.init_weights_seed)

    def _projection(self, fan_in: int, fan_out: int, position: str, shared) -> nn.Module:
        if self.config.phm_layer:
            return PHMLayer(self.config, fan_in, fan_out, position, shared)
        return nn.Linear(fan_in, fan_out)

    @torch.no_grad()
    def _init_weights(self, kind: str, seed: int | None) -> None:
        generator = init_generator(seed)
        down = self.adapter_down[-2]
        up = self.adapter_up
        if self.config.phm_layer:  # AdapterHub's "bert" init leaves PHM layers their own
            down.init_(generator)
            up.init_(generator)
            if kind == "identity":
                up.zero_()
        elif kind in ("identity", "bert"):
            down.weight.normal_(0.0, 0.02, generator=generator)
            up.weight.zero_() if kind == "identity" else up.weight.normal_(0.0, 0.02, generator=generator)
        elif kind == "mam_adapter":
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5), generator=generator)
            up.weight.zero_()
        elif kind == "houlsby":
            for lin in (down, up):
                nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2, generator=generator)
        if not self.config.phm_layer:
            down.bias.zero_()
            up.bias.zero_()
        if self.gate is not None:
            self.gate.weight.normal_(0.0, 0.02, generator=generator)
            self.gate.bias.zero_()

    def pre_forward(self, h, x, layer_norm, query_before_ln: bool = False, hx=None):
        """Returns (adapter input, fusion query, adapter residual); see the module docstring.
        ``hx``: ``h + x`` if the model computed it already."""
        c = self.config
        if c.is_parallel:
            return x, x, x
        query = h if query_before_ln else None
        residual = h if c.residual_before_ln is True else None
        if c.original_ln_before:
            h = h + x if hx is None else hx
            if c.residual_before_ln == "post_add":
                residual = h
            if layer_norm is not None:  # a pre-LN site has none
                h = layer_norm(h)
        if not c.residual_before_ln:
            residual = h
        return h, (h if query is None else query), residual

    def forward(self, h, residual):
        """Returns (output, up-projection output); the latter feeds AdapterFusion."""
        up = self.adapter_up(self.adapter_down(h))
        if self.training and self.config.stochastic_depth and not self.config.is_parallel:
            up = _drop_rows(up, self.config.stochastic_depth)
        if not (isinstance(self.scaling, float) and self.scaling == 1.0):  # spare a pass over the batch
            up = up * self.scaling
        out = self.dropout(up) if self.dropout.p else up
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(h)).mean(dim=1, keepdim=True)
        if self.config.is_parallel:
            return (self.adapter_norm_after(out) if self.config.ln_after else out), up
        if self.config.adapter_residual_before_ln:
            out = out + residual
        if self.config.ln_after:
            out = self.adapter_norm_after(out)
        if not self.config.adapter_residual_before_ln:
            out = out + residual
        return out, up

    @property
    def fusable(self) -> bool:
        """Whether ``fused_step`` computes this adapter's site: a sequential adapter whose output
        joins the sub-layer output ``h`` (pfeiffer, houlsby), unscaled, plain Linear projections, no
        gate, without dropout now."""
        c = self.config
        return (
            not c.is_parallel and c.residual_before_ln is True and c.original_ln_after and not c.ln_after
            and not c.adapter_residual_before_ln and isinstance(self.scaling, float) and self.scaling == 1.0
            and not (c.phm_layer or c.use_gating) and not (self.training and (self.dropout.p or c.stochastic_depth))
        )

    def fused_step(self, h, hx, layer_norm):
        """This adapter alone at its site in fewer passes over the batch. The site's result
        ``layer_norm(up + h + x)`` is one matmul that adds the up-projection, its bias and the
        model's ``hx = h + x`` together (the bias rides on a column of ones), then the LayerNorm;
        equal to pre_forward/forward/post_forward up to float rounding. Without autograd the
        matmul adds into ``hx`` in place: it is the model's own temporary, and copying it first
        would cost one more pass over the batch."""
        down = self.adapter_down(layer_norm(hx) if self.config.original_ln_before else h)
        down = torch.cat([down, down.new_ones(*down.shape[:-1], 1)], dim=-1).reshape(-1, down.shape[-1] + 1)
        up = torch.cat([self.adapter_up.weight, self.adapter_up.bias[:, None]], dim=1).t()
        flat = hx.reshape(-1, hx.shape[-1])
        out = torch.addmm(flat, down, up) if torch.is_grad_enabled() else flat.addmm_(down, up)
        return layer_norm(out.view_as(hx))

    def post_forward(self, out, h_in, x, layer_norm):
        if self.config.is_parallel:
            out = out + h_in
        if layer_norm is None:  # a pre-LN site: the layer adds x itself
            return out if self.config.original_ln_after else out - x
        return layer_norm(out + x) if self.config.original_ln_after else out


def _drop_rows(t: torch.Tensor, p: float) -> torch.Tensor:
    """Stochastic depth (torchvision's ``StochasticDepth(p, "row")``, which AdapterHub uses for
    AdapterPlus): in training each row's adapter output is dropped with probability ``p``, the
    kept ones scaled by ``1 / (1 - p)``. Sequential adapters only, as in AdapterHub."""
    keep = t.new_empty((t.shape[0],) + (1,) * (t.dim() - 1)).bernoulli_(1.0 - p)
    return t * keep.div_(1.0 - p)


def gather_kind(adapter: Bottleneck):
    """What adapters must share to run in one gathered pass (``BottleneckLayer.compose_rows``):
    ``fused_step``'s form, without the adapter's own LayerNorm, with the same first step and
    non-linearity; ``None`` for an adapter that runs on its own."""
    c = adapter.config
    return (bool(c.original_ln_before), c.non_linearity) if adapter.fusable and not c.ln_before else None


class State(NamedTuple):
    """What flows through a composition at one site."""

    hidden: torch.Tensor  # the adapter input (then output)
    x: torch.Tensor  # the layer's residual stream
    residual: torch.Tensor  # the adapter's own residual
    h: torch.Tensor  # the sub-layer's output as the site received it
    ln: nn.Module | None  # the site's transformer LayerNorm (None at a pre-LN site)
    up: torch.Tensor | None = None  # the last adapter's up-projection output (for fusion)
    last: str | None = None  # the last adapter applied: its post_forward closes the site
    hx: torch.Tensor | None = None  # h + x as the model computed it, while hidden is still h
    query: torch.Tensor | None = None  # a Fuse block's query, set by its pre step
    final: bool = False  # hidden is the site's output already (see BottleneckLayer.concat)


class BottleneckLayer(ComposableLayer):
    """All bottleneck adapters and fusions at one residual site of one transformer layer.

    ``adapters`` and ``adapter_fusion_layer`` are registered on the model at the site's
    container, so state-dict keys read as AdapterHub's
    (``...layer.3.output.adapters.<name>.adapter_up.weight``).
    """

    container = "adapters"

    def __init__(self, layer_idx: int, context, post_ln: bool):
        super().__init__(layer_idx, context)
        self.adapter_fusion_layer = nn.ModuleDict()
        # At a post-LN site both h and x pass through here, so a Parallel batch can be replicated
        # here, and the layers' work below the first adapter is shared by all copies.
        self.replicates_locally = post_ln

    def site_forward(self, state, h, x, hx, layer_norm):
        """The site's output from sub-layer output ``h`` and residual ``x`` (``families.hooks``)."""
        setup = self.active_setup(state)
        if setup is None:
            return None
        if isinstance(setup, Rows):
            return self.compose_rows(setup, h, x, hx, layer_norm)
        if self.replicates_locally:
            h, x, hx = self._replicate_for_parallel(state, setup, h, x, hx)
        return self._run(setup, h, x, hx, layer_norm)

    def _run(self, setup, h, x, hx, layer_norm):
        single = setup[0] if isinstance(setup, Stack) and len(setup) == 1 else setup
        if isinstance(single, str) and hx is not None and self.adapters[single].fusable:
            return self.adapters[single].fused_step(h, hx, layer_norm)  # the common case: one adapter
        out = composer.compose(self, setup, State(h, x, x, h, layer_norm, hx=hx))
        return out.hidden if out.final else self._post(out)

    # -- mixed batches ---------------------------------------------------------------------

    def compose_rows(self, rows: Rows, h, x, hx, layer_norm):
        """Each row through its own adapter. When the batch's adapters here are all of one kind
        of ``fused_step`` (pfeiffer, houlsby: ``gather_kind``), one gathered pass runs them all:
        their weights stacked once (``stacked``), each row's slice picked by index, one
        ``baddbmm`` per projection; a row without an adapter here picks a zero slot and gets the
        bare site. Other adapters run one group of rows at a time."""
        names = [n for n in rows.flatten() if n in self.adapters]
        kinds = {gather_kind(self.adapters[n]) for n in names}
        if len(kinds) == 1 and None not in kinds:
            return self._gathered(rows, kinds.pop(), h, x, hx, layer_norm)
        bare = layer_norm(hx) if hx is not None else h.clone()  # post-LN: the site as unhooked; pre-LN: the add's h

        def run(name, idx):
            part = [t.index_select(0, idx) if t is not None else None for t in (h, x, hx)]
            return self._run(name, *part, layer_norm)

        return rows_grouped(rows, self.adapters, bare, run)

    def _gathered(self, rows: Rows, kind, h, x, hx, layer_norm):
        """``fused_step`` with each row's own weights: ``LN(hx + up(act(down(a))))`` at a post-LN
        site, ``h + up(act(down(a)))`` at a pre-LN one (the model adds ``x``), where ``a`` is
        ``LN(hx)`` (or ``h + x``) when the kind normalizes first, else ``h``."""
        names = tuple(n for n, adapter in self.adapters.items() if gather_kind(adapter) == kind)
        down, down_bias, up = self.stacked(kind, names, self._stack)
        idx = rows.index(names, h.shape[0], h.device)
        normalize_first, _ = kind
        if not normalize_first:
            a = h
        else:
            a = layer_norm(hx) if hx is not None else h + x
        act = self.adapters[names[0]].adapter_down[-1]
        d = act(torch.baddbmm(down_bias[idx].unsqueeze(1), a, down[idx]))
        d = torch.cat([d, d.new_ones(*d.shape[:-1], 1)], dim=-1)  # the up-projection's bias rides on it
        if hx is None:
            return torch.baddbmm(h, d, up[idx])
        out = torch.baddbmm(hx, d, up[idx]) if torch.is_grad_enabled() else hx.baddbmm_(d, up[idx])
        return layer_norm(out)

    def _stack(self, names: tuple[str, ...]):
        """Down (N+1, hidden, r), its bias (N+1, r) and up with its bias as a last row
        (N+1, r+1, hidden), bottlenecks padded with zeros to the largest; slot N is all zeros."""
        adapters = [self.adapters[n] for n in names]
        r = max(a.adapter_up.in_features for a in adapters)
        downs, biases, ups = [], [], []
        for a in adapters:
            lin, pad = a.adapter_down[-2], r - a.adapter_up.in_features
            downs.append(F.pad(lin.weight.t(), (0, pad)))
            biases.append(F.pad(lin.bias, (0, pad)))
            ups.append(torch.cat([F.pad(a.adapter_up.weight.t(), (0, 0, 0, pad)), a.adapter_up.bias[None]]))
        return tuple(torch.stack([*parts, torch.zeros_like(parts[0])]) for parts in (downs, biases, ups))

    def _post(self, state: State) -> torch.Tensor:
        """The site's output: the last adapter's post step, or the bare site where none ran."""
        if state.last is None:
            return state.h if state.ln is None else state.ln(state.h + state.x)
        return self.adapters[state.last].post_forward(state.hidden, state.h, state.x, state.ln)

    @staticmethod
    def _replicate_for_parallel(state, setup, *tensors):
        """A Parallel setup replicates the batch at the first adapter site; later sites see it
        replicated already, and a skipped lower layer (AdapterDrop) shares its work."""
        channels = setup.parallel_channels
        if channels > 1 and tensors[0].shape[0] == state.batch_size:
            return tuple(t.repeat(channels, 1, 1) if t is not None else None for t in tensors)
        return tensors

    # -- the composer's operations ---------------------------------------------------------

    def pre_block(self, setup, state: State) -> State:
        """The pre step of the first adapter of ``setup`` here (of its last one for a Fuse block,
        with the fusion's query)."""
        self._refuse_final(state)
        fusion = None
        if isinstance(setup, Fuse):
            fusion = self.adapter_fusion_layer[setup.name] if setup.name in self.adapter_fusion_layer else None
            if fusion is None:
                raise AdapterConfigError(
                    f"no fusion layer {setup.name!r} at layer {self.layer_idx}; add it with add_fusion({setup.flatten()})"
                )
            name = setup.last()
        else:
            name = next(n for n in ([setup] if isinstance(setup, str) else setup.flatten()) if n in self.adapters)
        query_before_ln = fusion is not None and fusion.config.query_before_ln
        hidden, query, residual = self.adapters[name].pre_forward(state.hidden, state.x, state.ln, query_before_ln,
                                                                  state.hx)
        return state._replace(hidden=hidden, residual=residual, hx=None, query=query)

    def compose_single(self, name: str, state: State) -> State:
        self._refuse_final(state)
        out, up = self.adapters[name](state.hidden, state.residual)
        return state._replace(hidden=out, up=up, last=name)

    def concat(self, states: list[State], dim: int) -> State:
        """Slices joined. When they would end differently (a slice no adapter ran on, or adapters
        whose post steps differ), each slice ends itself and the result is the site's output."""
        ends = {self._end_of(s) for s in states}
        if len(ends) > 1:
            hidden = torch.cat([self._post(s) for s in states], dim=dim)
            return states[0]._replace(hidden=hidden, last=None, up=None, query=None, final=True)
        joined = {f: torch.cat([getattr(s, f) for s in states], dim=dim) for f in ("hidden", "x", "residual", "h")}
        return states[0]._replace(**joined, last=states[-1].last, up=None, query=None)

    def _end_of(self, state: State):
        """What a slice's post step does: nothing ran, or the last adapter's kind of post step."""
        if state.last is None:
            return None
        c = self.adapters[state.last].config
        return c.is_parallel, c.original_ln_after

    @staticmethod
    def _refuse_final(state: State) -> None:
        if state.final:
            raise AdapterConfigError(
                "a Stack cannot go on after a Parallel or BatchSplit block whose branches end differently at a site "
                "(one without an adapter there, or adapters of different placements); put the Stack inside the branches"
            )

    def mean(self, state: State, children: list[State], weights: list[float]) -> State:
        w = torch.tensor(weights, dtype=state.hidden.dtype, device=state.hidden.device)
        mean = (torch.stack([s.hidden for s in children]) * w[:, None, None, None]).sum(dim=0)
        return state._replace(hidden=mean, last=children[-1].last)

    def fuse(self, block: Fuse, state: State, children: list[State]) -> State:
        up = torch.stack([s.up for s in children], dim=2)  # (B, T, N, H)
        fused = self.adapter_fusion_layer[block.name](state.query, up, state.residual)
        return state._replace(hidden=fused, last=block.last())
