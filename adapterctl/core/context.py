"""Which adapters a forward pass runs: the model's default setup, setups chosen per call, and the
state of the pass in flight.

``set_active_adapters`` sets the default. ``with model.adapter_setup(...)`` (or a forward
argument) sets a ``CallSetup`` in a ``ContextVar``: it holds for that block in that thread
only, so two threads can run two setups through one model at once. When the backbone starts
a pass, its pre-hook turns the call's setup into a ``ForwardState`` (what to run, which layers
skip, the batch size before any Parallel replication, and the values a site's hooks hand each
other), and the adapter sites read it. The state is also kept as the model's last pass:
activation checkpointing re-runs layers during backward, after the pass returned, and they
must run the setup they ran with (in the thread that trains).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar, Token
from dataclasses import dataclass, field

import torch

from ..errors import AdapterConfigError
from .composition import Block

NO_ADAPTER = "__base__"  # a mixed batch's name for a row that runs no adapter (as None does)


class Rows:
    """A mixed batch's setup: one adapter name per row (``None`` or ``"__base__"``: the bare
    model), set by ``forward(adapter_names=...)``. A site that holds any of the names runs each
    row through its own adapter (``ComposableLayer.compose_rows``); the index tensors it needs are
    made once per call and shared by every site (and every step of ``generate``)."""

    parallel_channels = 1

    def __init__(self, names):
        self.names = tuple(None if n == NO_ADAPTER else n for n in names)
        self._cache: dict = {}

    def __repr__(self):
        return f"Rows({', '.join(map(repr, self.names))})"

    def __len__(self):
        return len(self.names)

    def flatten(self) -> list[str]:
        """The adapters of the batch, in order of their first row, without repeats."""
        return list(dict.fromkeys(n for n in self.names if n is not None))

    def per_row(self, batch: int) -> tuple[str | None, ...]:
        """The names for a batch of ``batch`` rows: ``generate`` with ``num_beams`` or
        ``num_return_sequences`` k runs k rows per input row, next to each other."""
        if batch == len(self.names):
            return self.names
        if batch % len(self.names):
            raise AdapterConfigError(f"adapter_names has {len(self.names)} entries, but the batch has {batch} rows; "
                                     "give one name per row")
        return tuple(n for n in self.names for _ in range(batch // len(self.names)))

    def groups(self, held, batch: int, device) -> dict[str, torch.Tensor]:
        """The rows of each adapter in ``held`` (a site's): ``{name: row indices}``."""
        key = ("groups", tuple(n for n in self.flatten() if n in held), batch, device)
        if key not in self._cache:
            names = self.per_row(batch)
            self._cache[key] = {name: torch.tensor([i for i, n in enumerate(names) if n == name], device=device)
                                for name in key[1]}
        return self._cache[key]

    def index(self, order: tuple[str, ...], batch: int, device) -> torch.Tensor:
        """Each row's position in ``order`` (a site's stacked adapters); ``len(order)`` for a row
        whose adapter is not among them (the stack's neutral slot)."""
        key = ("index", order, batch, device)
        if key not in self._cache:
            position = {name: i for i, name in enumerate(order)}
            self._cache[key] = torch.tensor([position.get(n, len(order)) for n in self.per_row(batch)], device=device)
        return self._cache[key]


@dataclass(frozen=True)
class CallSetup:
    """A setup and head chosen for some calls (or the model's default); a mixed batch's setup is
    ``Rows``."""

    setup: Block | Rows | None = None
    head: str | list | None = None
    skip_layers: frozenset = frozenset()  # AdapterDrop at inference: layers whose adapters are skipped
    replicated: bool = False  # the inputs hold a Parallel setup's copies already (generate() makes them)


@dataclass
class ForwardState:
    """One forward pass: what the adapter sites of each layer run."""

    setup: Block | Rows | None
    names: frozenset  # the setup's adapter names
    skip_layers: frozenset
    drop_below: int  # AdapterDrop in training: this pass also skips the adapters of layers < drop_below
    batch_size: int | None  # rows before any Parallel replication
    stash: dict = field(default_factory=dict)  # what one hook of a site leaves for the next (e.g. the residual)
    token: Token | None = None  # resets the ContextVar when the pass ends

    def setup_at(self, layer_idx: int, adapters) -> Block | Rows | None:
        """The setup, if it runs any of ``adapters`` (one site's) at this layer."""
        if self.setup is None or layer_idx in self.skip_layers or layer_idx < self.drop_below:
            return None
        return self.setup if not self.names.isdisjoint(adapters) else None


class AdapterContext:
    """One model's default setup, its per-call setups and its pass in flight."""

    def __init__(self):
        self.adapter_drop = None  # methods.adapterdrop.AdapterDrop while training with it
        self._call: ContextVar[CallSetup | None] = ContextVar("adapterctl_call", default=None)
        self._state: ContextVar[ForwardState | None] = ContextVar("adapterctl_state", default=None)
        self._last: ForwardState | None = None
        self.default = CallSetup()

    @property
    def default(self) -> CallSetup:
        """The model's own setup (``set_active_adapters``)."""
        return self._default

    @default.setter
    def default(self, call: CallSetup) -> None:
        self._default = call
        self._last = None  # modules called outside a pass now run the new setup

    @property
    def call(self) -> CallSetup:
        """The setup of the calls made here and now: a ``with`` block's or the default."""
        return self._call.get() or self.default

    @contextlib.contextmanager
    def using(self, call: CallSetup):
        token = self._call.set(call)
        try:
            yield call
        finally:
            self._call.reset(token)

    def begin(self, batch_size: int | None, training: bool) -> None:
        """Start a pass in this thread (the backbone's pre-hook). A stack's pass inside the
        backbone's (an encoder-decoder's) is part of it: it keeps the pass's AdapterDrop draw and
        stash, so the last state holds what every layer re-run in backward needs."""
        outer = self._state.get()
        if outer is not None:
            self._last = self._new_state(outer.drop_below, batch_size)
            self._last.stash = outer.stash
        else:
            drop = self.adapter_drop.sample() if training and self.adapter_drop is not None else 0
            self._last = self._new_state(drop, batch_size)
        self._last.token = self._state.set(self._last)

    def _new_state(self, drop_below: int, batch_size: int | None) -> ForwardState:
        call = self.call
        names = frozenset(call.setup.flatten()) if call.setup is not None else frozenset()
        if call.replicated and batch_size is not None:
            batch_size //= call.setup.parallel_channels
        return ForwardState(call.setup, names, call.skip_layers, drop_below, batch_size)

    def end(self) -> None:
        """End this thread's pass (the backbone's forward hook, also when the pass raised)."""
        state = self._state.get()
        if state is not None:
            self._state.reset(state.token)

    @property
    def state(self) -> ForwardState:
        """The pass in flight in this thread, else the last pass (layers re-run in backward),
        else one for modules called on their own (the current setup)."""
        state = self._state.get() or self._last
        if state is None:
            state = self._last = self._new_state(0, None)
        return state
