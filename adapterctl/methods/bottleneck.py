"""Bottleneck adapters (Houlsby, Pfeiffer, parallel) and the layer that runs them at a site.

Placement follows AdapterHub's ``adapters`` 1.x exactly, so its saved adapters give the same
outputs here. At a site the transformer computes ``layer_norm(h + x)`` (``h`` the sub-layer
output, ``x`` the residual stream); with adapters active this becomes:

    pre:   residual = h                        if residual_before_ln is True
           h = layer_norm(h + x)               if original_ln_before (residual = h + x if "post_add")
           residual = h                        if residual_before_ln is False
    adapter: out = up(act(down(ln_before?(h)))) * scaling, dropout, + residual, ln_after?
             (adapter_residual_before_ln decides whether the residual joins before ln_after)
    post:  out = layer_norm(out + x)           if original_ln_after

A parallel adapter reads ``x`` instead of ``h`` and its output joins ``h`` before the post step.
A single active pfeiffer or houlsby adapter takes a shortcut with the same result
(``Bottleneck.fused_step``): fewer passes over the batch keep inference near the bare model's speed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
from transformers.activations import get_activation

from .. import composition as C
from ..config import BnConfig
from ..errors import AdapterConfigError
from .fusion import Fusion


class Activation(nn.Module):
    """A named non-linearity (transformers' ACT2FN names, plus ``leakyrelu``)."""

    def __init__(self, name: str):
        super().__init__()
        self.f = nn.functional.leaky_relu if name.lower() == "leakyrelu" else get_activation(name.lower())

    def forward(self, x):
        return self.f(x)


class Bottleneck(nn.Module):
    """One adapter at one site. Weight names match AdapterHub's ``Adapter`` module:
    ``adapter_down.0`` (or ``.1`` after ``adapter_norm_before``), ``adapter_up``."""

    def __init__(self, config: BnConfig, hidden_size: int, bottleneck_size: int):
        super().__init__()
        self.config = config
        down: list[nn.Module] = []
        if config.ln_before:
            self.adapter_norm_before = nn.LayerNorm(hidden_size)
            down.append(self.adapter_norm_before)
        down += [nn.Linear(hidden_size, bottleneck_size), Activation(config.non_linearity)]
        self.adapter_down = nn.Sequential(*down)
        self.adapter_up = nn.Linear(bottleneck_size, hidden_size)
        if config.scaling == "learned":
            self.scaling = nn.Parameter(torch.ones(1))
        elif config.scaling == "channel":
            self.scaling = nn.Parameter(torch.ones(hidden_size))
        else:
            self.scaling = float(config.scaling)
        if config.ln_after:
            self.adapter_norm_after = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self._init_weights(config.init_weights, config.init_weights_seed)

    @torch.no_grad()
    def _init_weights(self, kind: str, seed: int | None) -> None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        down = self.adapter_down[-2]
        up = self.adapter_up
        if kind in ("identity", "bert"):
            down.weight.normal_(0.0, 0.02, generator=generator)
            up.weight.zero_() if kind == "identity" else up.weight.normal_(0.0, 0.02, generator=generator)
        elif kind == "mam_adapter":
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5), generator=generator)
            up.weight.zero_()
        elif kind == "houlsby":
            for lin in (down, up):
                nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2, generator=generator)
        down.bias.zero_()
        up.bias.zero_()

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
            h = layer_norm(h)
        if not c.residual_before_ln:
            residual = h
        return h, (h if query is None else query), residual

    def forward(self, h, residual):
        """Returns (output, up-projection output); the latter feeds AdapterFusion."""
        up = self.adapter_up(self.adapter_down(h))
        if not (isinstance(self.scaling, float) and self.scaling == 1.0):  # spare a pass over the batch
            up = up * self.scaling
        out = self.dropout(up) if self.dropout.p else up
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
        joins the sub-layer output ``h`` (pfeiffer, houlsby), unscaled, without dropout now."""
        c = self.config
        return (
            not c.is_parallel and c.residual_before_ln is True and c.original_ln_after and not c.ln_after
            and not c.adapter_residual_before_ln and isinstance(self.scaling, float) and self.scaling == 1.0
            and not (self.training and self.dropout.p)
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
        return layer_norm(out + x) if self.config.original_ln_after else out


class State(NamedTuple):
    """What flows through a composition at one site."""

    hidden: torch.Tensor  # the adapter input (then output)
    x: torch.Tensor  # the layer's residual stream
    residual: torch.Tensor  # the adapter's own residual
    ln: nn.Module  # the site's transformer LayerNorm
    up: torch.Tensor | None  # the last adapter's up-projection output (for fusion)
    last: str | None  # the last adapter applied: its post_forward closes the site
    hx: torch.Tensor | None = None  # hidden + x, while hidden is still the sub-layer's output


class AdapterLayer(nn.Module):
    """All adapters and fusions at one site of one transformer layer.

    ``adapters`` and ``adapter_fusion_layer`` are registered on the model at the site's
    container, so state-dict keys read as AdapterHub's
    (``...layer.3.output.adapters.<name>.adapter_up.weight``).
    """

    def __init__(self, site_key: str, layer_idx: int, context):
        super().__init__()
        self.site_key = site_key
        self.layer_idx = layer_idx
        self.context = context  # shared model-level state: active setup, skipped layers, ...
        self.adapters = nn.ModuleDict()
        self.adapter_fusion_layer = nn.ModuleDict()

    # -- hooks: the residual step, replaced ----------------------------------------------

    def attach(self, layer: nn.Module, site) -> None:
        """Hook into one site of a transformer layer (an ``architectures.Site``) and register the
        adapter modules at the site's container, under AdapterHub's names."""
        if _has(layer, site.container):
            container = layer.get_submodule(site.container)
            container.add_module("adapters", self.adapters)
            container.add_module("adapter_fusion_layer", self.adapter_fusion_layer)
        else:
            layer.add_module(site.container, self)
        name, pos = site.residual_arg

        def capture_x(module, args, kwargs):
            self._x = kwargs[name] if name in kwargs else args[pos]

        def capture_h(module, args, output):
            self._h = output[0] if isinstance(output, tuple) else output

        layer_norm = layer.get_submodule(site.layer_norm)
        original = layer_norm.forward

        def residual_step(hx):
            """Takes over the site's ``layer_norm(h + x)``; ``hx`` is the model's ``h + x``."""
            h, x, self._h, self._x = self._h, self._x, None, None
            setup = self.active_setup()
            if setup is None or h is None:
                return original(hx)
            return self(h, x, hx, original, setup)

        residual = layer.get_submodule(site.residual) if site.residual else layer
        residual.register_forward_pre_hook(capture_x, with_kwargs=True)
        layer.get_submodule(site.output).register_forward_hook(capture_h)
        # Wrapping the LayerNorm's forward (not a forward hook on it) spares computing a
        # normalization that the adapters would throw away; its weights and keys stay as they are.
        layer_norm.forward = residual_step
        self._h = self._x = None

    def active_setup(self):
        setup = self.context.active_setup
        if setup is None or self.context.skips(self.layer_idx):
            return None
        return setup if any(name in self.adapters for name in setup.flatten()) else None

    def forward(self, h, x, hx, layer_norm, setup):
        h, x, hx = self._replicate_for_parallel(h, x, hx)
        if isinstance(setup, C.Stack) and len(setup) == 1 and isinstance(setup[0], str) and self.adapters[setup[0]].fusable:
            return self.adapters[setup[0]].fused_step(h, hx, layer_norm)  # the common case: one adapter
        state = self.compose(setup, State(h, x, x, layer_norm, None, None, hx), 0)
        return self.adapters[state.last].post_forward(state.hidden, h, state.x, layer_norm)

    def _replicate_for_parallel(self, *tensors):
        """A Parallel setup replicates the batch at the first adapter layer; later layers see it
        already replicated, and a skipped lower layer (AdapterDrop) shares its work."""
        channels = self.context.active_setup.parallel_channels
        if channels > 1 and tensors[0].shape[0] == self.context.batch_size:
            return tuple(t.repeat(channels, 1, 1) for t in tensors)
        return tensors

    # -- composition ----------------------------------------------------------------------

    def compose(self, setup, state: State, level: int) -> State:
        if isinstance(setup, str):
            return self._single(setup, state) if setup in self.adapters else state
        return getattr(self, f"_{type(setup).__name__.lower()}")(setup, state, level)

    def _child(self, parent, child, state: State, level: int) -> State:
        if isinstance(child, C.Block):
            C.validate(parent, level)  # AdapterHub checks nesting at run time too
            if isinstance(child, C.Stack):  # every other block ran the site's pre step already
                return self._stack(child, state, level + 1, entered=True)
            return self.compose(child, state, level + 1)
        return self._single(child, state) if child in self.adapters else None

    def _pre(self, name_or_block, state: State, query_before_ln=False) -> tuple[State, torch.Tensor | None]:
        name = name_or_block if isinstance(name_or_block, str) else name_or_block.first()
        adapter = self.adapters[name] if name in self.adapters else None
        if adapter is None:
            return state._replace(hx=None), None
        hidden, query, residual = adapter.pre_forward(state.hidden, state.x, state.ln, query_before_ln, state.hx)
        return state._replace(hidden=hidden, residual=residual, hx=None), query

    def _single(self, name: str, state: State) -> State:
        out, up = self.adapters[name](state.hidden, state.residual)
        return state._replace(hidden=out, up=up, last=name)

    def _stack(self, block: C.Stack, state: State, level: int, entered: bool = False) -> State:
        """Each adapter runs its pre step, then itself. ``entered``: the parent block ran the
        first pre step. (AdapterHub 1.3 runs it again there, which for pfeiffer normalizes twice
        and makes ``Parallel(Stack(a, b), ...)`` differ from ``Stack(a, b)`` alone; we do not.)"""
        for child in block:
            if isinstance(child, C.Block):
                state = self._child(block, child, state, level)
            elif child in self.adapters:
                if not entered:
                    state, _ = self._pre(child, state)
                entered = False
                state = self._single(child, state)
        return state

    def _fuse(self, block: C.Fuse, state: State, level: int) -> State:
        fusion = self.adapter_fusion_layer[block.name] if block.name in self.adapter_fusion_layer else None
        if fusion is None:
            raise AdapterConfigError(
                f"no fusion layer {block.name!r} at layer {self.layer_idx}; add it with add_fusion({block.flatten()})"
            )
        last = block.last()
        state, query = self._pre(last, state, fusion.config.query_before_ln)
        children = [s for s in (self._child(block, c, state, level) for c in block) if s is not None]
        up = torch.stack([s.up for s in children], dim=2)  # (B, T, N, H)
        return state._replace(hidden=fusion(query, up, state.residual), last=last)

    def _split(self, block: C.Split, state: State, level: int) -> State:
        return self._parts(block, state, level, block.splits, dim=1)

    def _batchsplit(self, block: C.BatchSplit, state: State, level: int) -> State:
        return self._parts(block, state, level, block.batch_sizes, dim=0)

    def _parts(self, block, state: State, level: int, sizes: list[int], dim: int) -> State:
        """Children each on their own slice (batch rows: dim 0, sequence positions: dim 1),
        joined again after."""
        if sum(sizes) != state.hidden.shape[dim]:
            what = ("batch", "rows", "batch_sizes") if dim == 0 else ("sequence", "positions", "splits")
            raise AdapterConfigError(
                f"{type(block).__name__} sizes {sizes} add up to {sum(sizes)}, but the {what[0]} has "
                f"{state.hidden.shape[dim]} {what[1]}; make {what[2]} add up to it"
            )
        state, _ = self._pre(block, state)
        parts, start = [], 0
        for child, n in zip(block, sizes):
            part = State(*(t.narrow(dim, start, n) if torch.is_tensor(t) else t for t in state))
            parts.append(self._child(block, child, part, level) or part)
            start += n
        joined = {f: torch.cat([getattr(p, f) for p in parts], dim=dim) for f in ("hidden", "x", "residual")}
        last = next((p.last for p in reversed(parts) if p.last), None)
        return state._replace(**joined, up=None, last=last)

    def _parallel(self, block: C.Parallel, state: State, level: int) -> State:
        n = len(block)
        if state.hidden.shape[0] % n:
            raise AdapterConfigError(f"a Parallel batch of {state.hidden.shape[0]} rows does not split into {n} copies")
        return self._parts(block, state, level, [state.hidden.shape[0] // n] * n, dim=0)

    def _average(self, block: C.Average, state: State, level: int) -> State:
        state, _ = self._pre(block, state)
        children = [s for s in (self._child(block, c, state, level) for c in block) if s is not None]
        weights = torch.tensor(block.weights, dtype=state.hidden.dtype, device=state.hidden.device)
        # The weighted mean (weights sum to 1). AdapterHub 1.3 takes mean(w * h), which divides by
        # the number of adapters once more; we follow the definition instead.
        mean = (torch.stack([s.hidden for s in children]) * weights[:, None, None, None]).sum(dim=0)
        return state._replace(hidden=mean, last=children[-1].last)

    def add_fusion(self, name: str, config, hidden_size: int, dropout_prob: float) -> None:
        self.adapter_fusion_layer[name] = Fusion(config, hidden_size, dropout_prob)


def _has(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
        return True
    except AttributeError:
        return False
