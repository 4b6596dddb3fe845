"""What a method implements: its modules at each place of a layer (``ComposableLayer``) and the
glue that puts them into a model (``Method``).

A new method is a folder ``methods/<name>/`` with ``config.py`` (a frozen ``AdapterConfig``
dataclass with AdapterHub's fields, torch-free), ``layer.py`` (its modules and a
``ComposableLayer`` that runs them at one place: a residual site, a projection, the
embeddings, ...), ``model.py`` (a ``Method``: where the places are, from the family spec) and
``__init__.py`` (``register_method``). The composer (``core/composer.py``) runs every
composition block over the layer's operations, so a method writes those, not the blocks.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
import torch.nn as nn

from ..core.composition import Average, BatchSplit, Fuse, Parallel, Split, Stack
from ..core.context import AdapterContext, ForwardState
from ..errors import AdapterConfigError

ALL_BLOCKS = (Stack, Fuse, Split, Parallel, BatchSplit, Average)


def rows_grouped(rows, held, out: torch.Tensor, run) -> torch.Tensor:
    """A mixed batch one adapter at a time, for what no gathered pass covers: ``out`` (the
    place's result without adapters, one row per batch row, a tensor of its own) gets the rows
    of each adapter in ``held`` (the place's modules), in place, from ``run(name, rows)``: the
    usual one-adapter path on just those rows."""
    for name, idx in rows.groups(held, out.shape[0], out.device).items():
        out.index_copy_(0, idx, run(name, idx))
    return out


def init_generator(seed: int | None) -> torch.Generator | None:
    """The generator for a config's ``init_weights_seed`` (AdapterHub's field): with a seed, every
    module of the adapter starts from the same draw; without, from torch's global state."""
    return torch.Generator().manual_seed(seed) if seed is not None else None


@contextlib.contextmanager
def seeded(seed: int | None):
    """``init_weights_seed`` for modules that draw their own init (``nn.Linear``, ``nn.Embedding``):
    built inside, they start from that seed; torch's global random state is left as it was."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def one_adapter(setup, adapters, method: str) -> str | None:
    """The one adapter of ``adapters`` that ``setup`` runs, for methods that take one per pass
    (prompt tuning, ReFT: AdapterHub runs one too), or ``None``."""
    names = [n for n in setup.flatten() if n in adapters] if setup is not None else []
    if len(names) > 1:
        raise AdapterConfigError(f"{setup!r} runs {len(names)} {method} adapters ({', '.join(names)}); "
                                 f"a pass takes one {method} adapter")
    return names[0] if names else None


class ComposableLayer(nn.Module):
    """One method's adapters at one place of one transformer layer, and the operations the
    composer runs on the state flowing through them (a ``NamedTuple`` of the method's choice)."""

    container: ClassVar[str] = "adapters"  # the ModuleDict's name: the key segment before an adapter's name
    replicates_locally: ClassVar[bool] = False  # can repeat a Parallel batch here (else the layer's entry does)

    def __init__(self, layer_idx: int, context: AdapterContext):
        super().__init__()
        self.layer_idx = layer_idx
        self.context = context
        self.add_module(self.container, nn.ModuleDict())
        self._stacks: dict = {}  # mixed batches: kind -> (what it was built from, stacked weights)

    @property
    def adapter_modules(self) -> nn.ModuleDict:
        return getattr(self, self.container)

    def active_setup(self, state: ForwardState):
        """The setup this pass runs here, or ``None`` (a skipped layer, none of ours)."""
        return state.setup_at(self.layer_idx, self.adapter_modules.keys())

    # -- the composer's operations (AdapterHub's ComposableAdapterLayerBase) ---------------

    def pre_block(self, setup, state):
        """The step before a block or an adapter of a Stack; none by default."""
        return state

    def compose_single(self, name: str, state):
        raise NotImplementedError

    def size(self, state, dim: int) -> int:
        return state[0].shape[dim]

    def narrow(self, state, dim: int, start: int, length: int):
        """Rows (dim 0) or positions (dim 1) ``start:start + length`` of every tensor in the state."""
        return type(state)(*(t.narrow(dim, start, length) if torch.is_tensor(t) else t for t in state))

    def concat(self, states: list, dim: int):
        raise NotImplementedError

    def mean(self, state, children: list, weights: list[float]):
        raise NotImplementedError

    # -- mixed batches (``forward(adapter_names=...)``): each row its own adapter -------------

    def stacked(self, kind, names: tuple[str, ...], build):
        """``build(names)``: the weights of these adapters stacked for a gathered pass (each row
        picks its adapter's slice), kept until one of the adapters or its weights changes (a
        training step or a load moves a parameter's version counter). With autograd on they are
        built anew, so gradients reach the adapters' own parameters. The key holds the modules
        themselves: a deleted adapter stays alive until the next rebuild, so no new module can
        take its id."""
        if torch.is_grad_enabled():
            return build(names)
        modules = self.adapter_modules
        key = tuple((n, modules[n], tuple(p._version for p in modules[n].parameters())) for n in names)
        cached = self._stacks.get(kind)
        if cached is None or cached[0] != key:
            cached = self._stacks[kind] = (key, build(names))
        return cached[1]


class Method:
    """One adapter method in one model: places its modules where the family spec says, finds
    them again and removes them. Made on first use, one per model; ``host`` is the model."""

    name: ClassVar[str]
    supported_blocks: ClassVar[tuple[type, ...]] = ALL_BLOCKS
    containers: ClassVar[tuple[str, ...]] = ("adapters",)  # key segments before an adapter's name
    can_merge: ClassVar[bool] = False
    combine_strategies: ClassVar[tuple[str, ...]] = ("linear",)  # average_adapter's (methods/averaging.py)
    supports_rows: ClassVar[bool] = False  # runs mixed batches (its layers' sites handle ``Rows``)

    def __init__(self, host):
        self.host = host
        self.layers: dict[tuple, ComposableLayer] = {}  # (stack, layer index, place) -> layer

    def add(self, name: str, config) -> None:
        """Create the adapter's modules at every place its config asks for."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        for layer in self.layers.values():
            if name in layer.adapter_modules:
                del layer.adapter_modules[name]

    def modules(self, name: str) -> list[nn.Module]:
        """Every module of one adapter (its parameters are what trains, counts and is saved)."""
        return [layer.adapter_modules[name] for _, layer in sorted(self.layers.items())
                if name in layer.adapter_modules]

    def file_tensors(self, tensors: dict) -> dict:
        """The tensors of a saved file that hold this method's weights (a file may repeat some)."""
        return tensors

    def begin_pass(self, state, stacks: frozenset, inputs: dict) -> None:
        """A pass that runs the layers of ``stacks`` begins (``state``: its ``ForwardState``;
        ``inputs``: the keyword arguments it was called with): what the pass shares across
        layers goes into ``state.stash`` here, outside any layer, since activation checkpointing
        re-runs single layers in backward."""

    def merge(self, name: str) -> None:
        """Fold the adapter into the backbone's weights (methods with ``can_merge``)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Undo ``merge``."""
        raise NotImplementedError

    def merged(self) -> list[str]:
        """The adapters merged into the weights now."""
        return []
