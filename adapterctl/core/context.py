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

from .composition import Block


@dataclass(frozen=True)
class CallSetup:
    """A setup and head chosen for some calls (or the model's default). A mixed batch's per-row
    adapter names would be one more field here, read by the sites from the ``ForwardState``."""

    setup: Block | None = None
    head: str | list | None = None
    skip_layers: frozenset = frozenset()  # AdapterDrop at inference: layers whose adapters are skipped


@dataclass
class ForwardState:
    """One forward pass: what the adapter sites of each layer run."""

    setup: Block | None
    names: frozenset  # the setup's adapter names
    skip_layers: frozenset
    drop_below: int  # AdapterDrop in training: this pass also skips the adapters of layers < drop_below
    batch_size: int | None  # rows before any Parallel replication
    stash: dict = field(default_factory=dict)  # what one hook of a site leaves for the next (e.g. the residual)
    token: Token | None = None  # resets the ContextVar when the pass ends

    def setup_at(self, layer_idx: int, adapters) -> Block | None:
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
        """Start a pass in this thread (the backbone's pre-hook)."""
        drop = self.adapter_drop.sample() if training and self.adapter_drop is not None else 0
        self._last = self._new_state(drop, batch_size)
        self._last.token = self._state.set(self._last)

    def _new_state(self, drop_below: int, batch_size: int | None) -> ForwardState:
        call = self.call
        names = frozenset(call.setup.flatten()) if call.setup is not None else frozenset()
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
