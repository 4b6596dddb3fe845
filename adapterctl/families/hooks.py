"""Hooks that let methods act at a family's places without a copy of transformers' modeling
code: a new transformers release that keeps the module names keeps working.

- A residual site (``spec.ResidualSite``) calls ``run(state, h, x, hx, layer_norm)`` where the
  layer joins a sub-layer's output ``h`` and the residual ``x``. Post-LN: in place of the
  site's ``LayerNorm(h + x)`` (``hx`` is the model's ``h + x``), returning the site's output.
  Pre-LN, where the layer adds ``x + h`` inline: on the sub-layer's output, returning the value
  that the inline add turns into the site's output (``x`` is added by the model).
- A projection calls ``run(state, x, out)`` after the Linear computed ``out`` from ``x``.

``run`` returns ``None`` when it has nothing to do, and the layer goes on as if unhooked.
"""

from __future__ import annotations

import torch.nn as nn

from ..core.context import AdapterContext
from .spec import POST_LN, ResidualSite


def _argument(args, kwargs, name_pos: tuple[str, int]):
    name, pos = name_pos
    return kwargs[name] if name in kwargs else args[pos]


def attach_residual_site(layer: nn.Module, site: ResidualSite, context: AdapterContext, run) -> None:
    """Hook ``run`` into one residual site of a transformer layer."""
    key_x, key_h = (id(run), "x"), (id(run), "h")

    def capture_x(module, args, kwargs):
        state = context.state
        if state.setup is not None:
            state.stash[key_x] = _argument(args, kwargs, site.residual_arg)

    layer.get_submodule(site.residual).register_forward_pre_hook(capture_x, with_kwargs=True)
    output = layer.get_submodule(site.output)

    if site.kind == POST_LN:
        def capture_h(module, args, out):
            state = context.state
            if state.setup is not None:
                state.stash[key_h] = out[0] if isinstance(out, tuple) else out

        layer_norm = layer.get_submodule(site.layer_norm)
        original = layer_norm.forward

        def residual_step(hx):
            """Takes over the site's ``layer_norm(h + x)``; ``hx`` is the model's ``h + x``."""
            state = context.state
            h = state.stash.pop(key_h, None)
            if h is None:
                return original(hx)
            x = state.stash.pop(key_x)
            if site.dropout_fn and layer.training:
                h = hx - x  # the layer's own functional dropout acted on h before its add
            out = run(state, h, x, hx, original)
            return original(hx) if out is None else out

        output.register_forward_hook(capture_h)
        # Wrapping the LayerNorm's forward (not a forward hook on it) spares computing a
        # normalization that the adapters would throw away; its weights and keys stay as they are.
        layer_norm.forward = residual_step
        return

    def inline_residual(module, args, out):
        state = context.state
        x = state.stash.pop(key_x, None)
        if x is None:
            return None
        h = out[0] if isinstance(out, tuple) else out
        value = run(state, h, x, None, None)
        if value is None:
            return None
        return (value, *out[1:]) if isinstance(out, tuple) else value

    output.register_forward_hook(inline_residual)


def attach_projection(linear: nn.Module, context: AdapterContext, run):
    """Hook ``run`` after a projection; returns the handle (merging removes it)."""

    def after(module, args, out):
        state = context.state
        if state.setup is None:
            return None
        return run(state, args[0], out)

    # Before any other hook on it: a residual site whose ``h`` is this projection's output (BART's
    # fc2) must see the adapted output, whichever of the two was added first.
    return linear.register_forward_hook(after, prepend=True)
