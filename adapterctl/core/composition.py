"""The setup tree: how active adapters combine at every adapter layer.

A setup is a plain adapter name or a block: ``Stack`` (in order), ``Fuse`` (AdapterFusion
attention over the children), ``Split`` (sequence positions), ``BatchSplit`` (batch rows),
``Parallel`` (the batch replicated, one copy per child) and ``Average`` (weighted mean).

The shorthand of the seed: a string is one adapter, a list a stack, a list nested in a list a
fusion (``["lang", ["a", "b"]]`` is ``Stack("lang", Fuse("a", "b"))``). Nesting rules and the
JSON form (``adapter_setup.json``) are AdapterHub's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch

from ..errors import AdapterConfigError


class Block(Sequence):
    """A composition block: an ordered list of children (names or blocks)."""

    def __init__(self, *children):
        if not children:
            raise AdapterConfigError(f"{type(self).__name__} needs at least one adapter")
        self.children = [_parse_child(c) for c in children]

    def __getitem__(self, i):
        return self.children[i]

    def __len__(self):
        return len(self.children)

    def __eq__(self, other):
        return type(self) is type(other) and self.children == other.children and self._kwargs() == other._kwargs()

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))

    def __repr__(self):
        args = [repr(c) for c in self.children] + [f"{k}={v!r}" for k, v in (self._kwargs() or {}).items()]
        return f"{type(self).__name__}({', '.join(args)})"

    def _kwargs(self) -> dict | None:
        return None

    def first(self) -> str:
        c = self.children[0]
        return c if isinstance(c, str) else c.first()

    def last(self) -> str:
        c = self.children[-1]
        return c if isinstance(c, str) else c.last()

    def flatten(self) -> list[str]:
        """All adapter names in the tree, in order, without repeats."""
        out: list[str] = []
        for c in self.children:
            for name in [c] if isinstance(c, str) else c.flatten():
                if name not in out:
                    out.append(name)
        return out

    @property
    def parallel_channels(self) -> int:
        return max(c.parallel_channels if isinstance(c, Block) else 1 for c in self.children)

    def to_dict(self) -> dict:
        d = {
            "type": type(self).__name__,
            "children": [c.to_dict() if isinstance(c, Block) else {"type": "single", "children": [c]} for c in self.children],
        }
        if self._kwargs():
            d["kwargs"] = self._kwargs()
        return d

    @staticmethod
    def from_dict(d: dict) -> "Block":
        try:
            cls = BLOCKS[d["type"]]
            children = [c["children"][0] if c["type"] == "single" else Block.from_dict(c) for c in d["children"]]
            return cls(*children, **d.get("kwargs", {}))
        except (KeyError, TypeError, IndexError) as e:
            raise AdapterConfigError(
                f"malformed adapter setup {d!r} ({e}); expected {{'type': one of {', '.join(BLOCKS)}, 'children': [...]}}"
            ) from None


class Stack(Block):
    """Children applied one after the other (MAD-X: a language adapter under a task adapter)."""


class Fuse(Block):
    """AdapterFusion: attention over the children's outputs; named ``a,b,c`` unless given a name."""

    def __init__(self, *children, name: str | None = None):
        super().__init__(*children)
        self._name = name
        outputs = [c if isinstance(c, str) else c.last() for c in self.children]
        twice = sorted({n for n in outputs if outputs.count(n) > 1})
        if twice:
            raise AdapterConfigError(f"Fuse names {', '.join(map(repr, twice))} more than once ({self!r}); fuse each "
                                     "adapter once")

    @property
    def name(self) -> str:
        return self._name or ",".join(c if isinstance(c, str) else c.last() for c in self.children)


class Split(Block):
    """Sequence positions split among the children: ``splits`` tokens each."""

    def __init__(self, *children, splits: Union[list[int], int]):
        super().__init__(*children)
        self.splits = _sizes(self, "splits", splits)

    def _kwargs(self):
        return {"splits": self.splits}


class BatchSplit(Block):
    """Batch rows split among the children: ``batch_sizes`` rows each."""

    def __init__(self, *children, batch_sizes: Union[list[int], int]):
        super().__init__(*children)
        self.batch_sizes = _sizes(self, "batch_sizes", batch_sizes)

    def _kwargs(self):
        return {"batch_sizes": self.batch_sizes}


class Parallel(Block):
    """The batch replicated once per child at the first adapter layer: N tasks in one pass."""

    @property
    def parallel_channels(self) -> int:
        return len(self.children)


class Average(Block):
    """Weighted mean of the children's outputs (weights normalized to sum to 1 by default)."""

    def __init__(self, *children, weights: list[float] | None = None, normalize_weights: bool = True):
        super().__init__(*children)
        if weights is None:
            weights = [1.0 / len(self.children)] * len(self.children)
        if len(weights) != len(self.children):
            raise AdapterConfigError(f"Average has {len(self.children)} children but {len(weights)} weights")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
            raise AdapterConfigError(f"Average weights {list(weights)} must be finite numbers")
        total = sum(weights)
        if normalize_weights:
            if abs(total) < 1e-12:
                raise AdapterConfigError(f"Average weights {list(weights)} sum to zero and cannot be normalized; "
                                         "give weights with a non-zero sum, or normalize_weights=False")
            weights = [w / total for w in weights]
        self.weights = list(weights)

    def _kwargs(self):
        return {"weights": self.weights}


BLOCKS = {cls.__name__: cls for cls in (Stack, Fuse, Split, BatchSplit, Parallel, Average)}


def _sizes(block: Block, what: str, sizes) -> list[int]:
    """Split's and BatchSplit's sizes: one count (for every child) or one per child, each >= 0."""
    sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes] * len(block.children)
    kind = type(block).__name__
    if len(sizes) != len(block.children):
        raise AdapterConfigError(f"{kind} has {len(block.children)} children but {len(sizes)} {what}; give one per child")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
        raise AdapterConfigError(f"{kind} {what} {sizes} must be whole numbers >= 0 (one per child)")
    return sizes

# Which children each block may hold (AdapterHub's table); a Stack below the top level may
# hold only names.
ALLOWED_NESTINGS = {
    Stack: (str, Fuse, Split, Parallel, BatchSplit, Average),
    Fuse: (str, Stack),
    Split: (str, Split, Stack, BatchSplit, Average),
    Parallel: (str, Stack, BatchSplit, Average),
    BatchSplit: (str, Stack, Split, BatchSplit, Average),
    Average: (str, Stack, Split, BatchSplit),
}

Setup = Union[str, Block]


def head_names(head_setup) -> list[str]:
    """The heads a head setup runs: one name, a list (Parallel's, one per copy) or a BatchSplit
    (AdapterHub's: head i on rows i)."""
    if head_setup is None:
        return []
    return [head_setup] if isinstance(head_setup, str) else list(head_setup)


def _parse_child(c):
    if isinstance(c, (str, Block)):
        return c
    if isinstance(c, (list, tuple)):
        return Fuse(*c)  # a list inside a block's children is a fusion (the seed's nested list)
    raise AdapterConfigError(f"cannot use {c!r} in an adapter setup; use adapter names or blocks")


def parse_setup(setup) -> Block | None:
    """Normalize what a user passes to ``set_active_adapters`` into a validated block.

    ``"a"`` -> ``Stack("a")``; ``["a", "b"]`` -> ``Stack("a", "b")``; ``["a", ["b", "c"]]`` ->
    ``Stack("a", Fuse("b", "c"))``; a dict is the JSON form; ``None`` deactivates.
    """
    if setup is None:
        return None
    if isinstance(setup, str):
        block = Stack(setup)
    elif isinstance(setup, dict):
        block = Block.from_dict(setup)
    elif isinstance(setup, Block):
        block = setup
    elif isinstance(setup, (list, tuple)):
        block = Stack(*setup)
    else:
        raise AdapterConfigError(
            f"cannot use {setup!r} as an adapter setup; give a name, a list (stack), a nested list (fusion) or a block"
        )
    validate(block)
    return block


def validate(block: Block, level: int = 0) -> None:
    """Raise if a block nests a child that AdapterHub's rules do not allow, saying why."""
    for child in block.children:
        if isinstance(child, str):
            continue
        if isinstance(block, Stack) and level >= 1:
            raise AdapterConfigError(
                f"adapter setup too deep: {type(child).__name__} inside a Stack that is itself nested ({block!r}); "
                "a nested Stack may only hold adapter names"
            )
        allowed = ALLOWED_NESTINGS[type(block)]
        if not isinstance(child, allowed) or type(child) not in allowed:
            names = ", ".join("adapter names" if t is str else t.__name__ for t in allowed)
            raise AdapterConfigError(
                f"cannot nest {type(child).__name__} inside {type(block).__name__} ({block!r}): "
                f"{_why_not(block, child)}; {type(block).__name__} may hold: {names}"
            )
        validate(child, level + 1)


def _why_not(parent: Block, child: Block) -> str:
    """The reason behind a rule of ALLOWED_NESTINGS, for the error message."""
    if isinstance(child, Parallel):
        return "Parallel replicates the whole batch, so it can only be the setup itself or a step of a Stack"
    if isinstance(child, Fuse):
        return "a fusion layer attends over whole adapter outputs, so Fuse can only be the setup itself or a step of a Stack"
    if isinstance(parent, Fuse):
        return "Fuse attends over its children's outputs at every row and position, so each child must be one output"
    if type(child) is type(parent):
        return f"a {type(child).__name__} inside a {type(parent).__name__} is one flat {type(parent).__name__}; write it flat"
    return "AdapterHub's nesting rules do not allow it, and we keep them so that saved setups load in both libraries"


def repeat_rows(value, rows: int, copies: int):
    """``value`` (a tensor, or a tuple of them) with each tensor of ``rows`` rows (and at least 2
    dims) repeated ``copies`` times along the batch, copy i on rows i*rows..: how a Parallel
    setup's per-row inputs follow its replicated hidden states (AdapterHub's
    ``adjust_tensors_for_parallel``). Other values pass through."""
    if isinstance(value, tuple):
        return tuple(repeat_rows(v, rows, copies) for v in value)
    if torch.is_tensor(value) and value.dim() >= 2 and value.shape[0] == rows:
        return value.repeat(copies, *[1] * (value.dim() - 1))
    return value


def heads_of(block: Block):
    """AdapterHub's rule: the head named like the last adapter; one per child for Parallel."""
    final = block.children[-1] if isinstance(block, Stack) else block
    if isinstance(final, str):
        return final
    if isinstance(final, Parallel):
        return [c if isinstance(c, str) else c.last() for c in final.children]
    if isinstance(final, BatchSplit):
        return BatchSplit(*[c if isinstance(c, str) else c.last() for c in final.children],
                            batch_sizes=final.batch_sizes)
    if isinstance(final, Fuse):
        return final.name
    return None


def blocks_in(block):
    """``block`` and every block nested in it, depth first."""
    if isinstance(block, Block):
        yield block
        for child in block.children:
            yield from blocks_in(child)


def fusions_in(block) -> list[str]:
    """The names of the fusions a setup uses."""
    return [b.name for b in blocks_in(block) if isinstance(b, Fuse)]
