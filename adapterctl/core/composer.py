"""The composition blocks, run once for every method.

At each place where a method acts (a residual site for bottleneck adapters, a projection for
LoRA), the method's layer holds its adapters and offers a few operations: ``pre_block`` (a
bottleneck adapter's step before the block: the residual and the LayerNorm), ``compose_single``
(one adapter), ``narrow`` and ``concat`` (a slice of batch rows or sequence positions, and the
slices joined again), ``mean`` (Average) and ``fuse`` (AdapterFusion, bottleneck only). This
module runs Stack, Parallel, BatchSplit, Split, Average and Fuse over those operations, as
AdapterHub's ``ComposableAdapterLayerBase`` does, with deliberate differences:

- ``Average`` is the weighted mean (AdapterHub divides by the number of adapters once more).
- A child of Parallel, BatchSplit or Split runs on its slice as the whole setup would there,
  with its own pre step; a slice whose child has no adapter at this place passes unchanged.
  (AdapterHub runs the block's first adapter's pre step for all slices, and then each nested
  Stack's again: for pfeiffer that normalizes twice, so ``Parallel(Stack(a, b), ...)`` differs
  from ``Stack(a, b)``, and Parallel of a LoRA and a bottleneck adapter fails.)
- The children of Average and Fuse share one pre step; a Stack among them does not repeat it.

Parallel expects the batch replicated already (N copies of B rows): a layer replicates it where
it can (``replicates_locally``), the transformer layer's entry hook otherwise.
"""

from __future__ import annotations

from ..errors import AdapterConfigError
from .composition import Average, BatchSplit, Block, Fuse, Parallel, Split, Stack


def compose(layer, setup: Block | str, state):
    """``state`` after the setup's adapters that ``layer`` holds."""
    return _run(layer, setup, state, 0)


def _run(layer, setup: Block | str, state, level: int):
    """``setup`` on ``state`` as if it were the whole setup; ``None`` if ``layer`` holds none of it."""
    if not any(name in layer.adapter_modules for name in ([setup] if isinstance(setup, str) else setup.flatten())):
        return None
    if isinstance(setup, str):
        return layer.compose_single(setup, layer.pre_block(setup, state))
    if isinstance(setup, Stack):
        return _stack(layer, setup, state, level)
    return _BLOCKS[type(setup)](layer, setup, state, level)


def _child(layer, child, state, level: int):
    """A child of a block (Average, Fuse) that ran its pre step for all children already;
    ``None`` if ``layer`` lacks it."""
    if isinstance(child, str):
        return layer.compose_single(child, state) if child in layer.adapter_modules else None
    if isinstance(child, Stack):
        return _stack(layer, child, state, level + 1, entered=True)
    return _run(layer, child, state, level + 1)


def _stack(layer, block: Stack, state, level: int, entered: bool = False):
    """Each adapter runs its pre step, then itself; ``entered``: the parent ran the first pre step."""
    for child in block:
        if isinstance(child, Block):
            state = _run(layer, child, state, level + 1) or state
        elif child in layer.adapter_modules:
            if not entered:
                state = layer.pre_block(child, state)
            entered = False
            state = layer.compose_single(child, state)
    return state


def _parts(layer, block: Block, state, level: int, sizes: list[int], dim: int):
    """Children each on their own slice (batch rows: dim 0, sequence positions: dim 1), as if
    each were the whole setup there, joined after; a slice whose child ``layer`` lacks stays
    as it came."""
    total = layer.size(state, dim)
    if sum(sizes) != total:
        what = ("batch", "rows", "batch_sizes") if dim == 0 else ("sequence", "positions", "splits")
        raise AdapterConfigError(
            f"{type(block).__name__} sizes {sizes} add up to {sum(sizes)}, but the {what[0]} has "
            f"{total} {what[1]}; make {what[2]} add up to it"
        )
    parts, start = [], 0
    for child, n in zip(block, sizes):
        part = layer.narrow(state, dim, start, n)
        parts.append(_run(layer, child, part, level + 1) or part)
        start += n
    return layer.concat(parts, dim)


def _split(layer, block: Split, state, level: int):
    return _parts(layer, block, state, level, block.splits, dim=1)


def _batch_split(layer, block: BatchSplit, state, level: int):
    return _parts(layer, block, state, level, block.batch_sizes, dim=0)


def _parallel(layer, block: Parallel, state, level: int):
    rows, n = layer.size(state, 0), len(block)
    if rows % n:
        raise AdapterConfigError(f"a Parallel batch of {rows} rows does not split into {n} copies")
    return _parts(layer, block, state, level, [rows // n] * n, dim=0)


def _average(layer, block: Average, state, level: int):
    state = layer.pre_block(block, state)
    done = [(s, w) for s, w in ((_child(layer, c, state, level), w) for c, w in zip(block, block.weights))
            if s is not None]
    if not done:
        return state
    return layer.mean(state, [s for s, _ in done], [w for _, w in done])


def _fuse(layer, block: Fuse, state, level: int):
    state = layer.pre_block(block, state)
    children = [s for s in (_child(layer, c, state, level) for c in block) if s is not None]
    return layer.fuse(block, state, children) if children else state


_BLOCKS = {Split: _split, BatchSplit: _batch_split, Parallel: _parallel, Average: _average, Fuse: _fuse}


def check_supported(block: Block, method_of) -> None:
    """Refuse a setup that puts an adapter inside a block its method cannot run.
    ``method_of(name)``: the adapter's method (a ``methods.base.Method`` class)."""

    def walk(node: Block, enclosing: tuple[type, ...]):
        for child in node:
            if isinstance(child, Block):
                walk(child, (*enclosing, type(child)))
                continue
            method = method_of(child)
            bad = next((t for t in enclosing if t not in method.supported_blocks), None)
            if bad is not None:
                raise AdapterConfigError(
                    f"{child!r} is a {method.name} adapter, and {method.name} cannot run inside {bad.__name__} "
                    f"({block!r}); {method.name} supports {', '.join(t.__name__ for t in method.supported_blocks)}"
                )

    walk(block, (type(block),))
