"""Checkpoints that make ``resume=true`` bit-exact: the trainable weights, the optimizer and
scheduler, every RNG, and the loop's counters. ``checkpoints/last`` is replaced atomically
(a ``kill -9`` mid-save leaves the previous one); ``checkpoints/best`` keeps the best weights.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_dir

STATE = "state.pt"
WEIGHTS = "weights.pt"


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Only what training changes: the adapter and head (everything, for full fine-tuning)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save(folder: Path, model, optimizer, scheduler, loop_state: dict) -> None:
    with atomic_dir(folder, overwrite=True) as tmp:
        torch.save(trainable_state(model), tmp / WEIGHTS)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "loop": loop_state}, tmp / STATE)


def save_weights(folder: Path, model) -> None:
    with atomic_dir(folder, overwrite=True) as tmp:
        torch.save(trainable_state(model), tmp / WEIGHTS)


def load_weights(folder: Path, model) -> None:
    weights = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def restore(folder: Path, model, optimizer, scheduler) -> dict:
    """Load a ``save``d checkpoint into the objects; returns the loop's counters."""
    load_weights(folder, model)
    state = torch.load(folder / STATE, map_location="cpu", weights_only=False)  # our own file: RNG states are tuples
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["loop"]


