"""Checkpoints that make ``resume=true`` bit-exact, stored so that reading them runs no code.

``checkpoints/last`` holds the trainable weights (``weights.safetensors``), and the optimizer,
scheduler, gradient scaler, every process's RNG states and the loop's counters as
``state.json`` (numbers, strings, lists) with their tensors in ``state.safetensors``. Nothing
is unpickled: a run folder someone hands you can hold wrong numbers, never code. A folder
in any other form (the pickled ``state.pt`` of adapterctl 0.1) is refused with one line.
``last`` is replaced atomically (a ``kill -9`` mid-save leaves the previous one, which the next
read or save puts back); ``checkpoints/best`` keeps the best weights.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CorruptFileError
from ..io import atomic_dir, atomic_write_text, recover

WEIGHTS = "weights.safetensors"
STATE = "state.json"
TENSORS = "state.safetensors"
FORMAT = 1
LEGACY = ("state.pt", "weights.pt")  # pickles written by adapterctl 0.1: never read
NUMPY_DTYPES = ("<u4", "<i8", "<f8")  # NumPy's random state: its key (uint32), counters


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Only what training changes: the adapter and head (everything, for full fine-tuning)."""
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    """This process's random states: Python's, NumPy's, torch's CPU and (if in use) CUDA generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, model, optimizer, scheduler, loop_state: dict, rng_states: list[dict], scaler=None) -> None:
    """Replace ``folder`` with this step's checkpoint; ``rng_states`` holds one entry per process."""
    tensors: dict[str, torch.Tensor] = {}
    tree = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_states}
    encoded = {"format": FORMAT, "loop": loop_state, "state": _encode(tree, tensors, "")}
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        save_file(tensors, str(tmp / TENSORS))
        atomic_write_text(tmp / STATE, json.dumps(encoded))


def save_weights(folder: Path, model) -> None:
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file(trainable_state(model), str(tmp / WEIGHTS))


def load_weights(folder: Path, model) -> None:
    weights = _read_tensors(folder, WEIGHTS)
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise CorruptFileError(f"{folder / WEIGHTS} holds {unknown[0]!r}, which this model does not have; "
                               "it belongs to another run")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def _read_json(folder: Path) -> dict:
    _refuse_legacy(folder)
    path = folder / STATE
    try:
        encoded = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptFileError(f"{path} is missing: {folder} is not a complete checkpoint") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None
    if not isinstance(encoded, dict) or encoded.get("format") != FORMAT or not isinstance(encoded.get("loop"), dict):
        raise CorruptFileError(f"{path} is not an adapterctl checkpoint of format {FORMAT}")
    return encoded


def read_state(folder: Path) -> dict:
    """The checkpoint's optimizer, scheduler, scaler, RNG and loop state, decoded from JSON and safetensors."""
    encoded = _read_json(folder)
    path = folder / STATE
    try:
        state = _decode(encoded.get("state"), _read_tensors(folder, TENSORS), path)
    except TypeError:  # e.g. a list where a dictionary key belongs
        raise CorruptFileError(f"{path} holds entries adapterctl does not write; the checkpoint is damaged") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "scaler", "rng"} <= set(state) or not state["rng"]:
        raise CorruptFileError(f"{path} lacks parts of a checkpoint; the checkpoint is damaged")
    return {**state, "loop": encoded["loop"]}


def saved_step(folder: Path) -> int:
    """The step a checkpoint was written at (its JSON only, not its tensors)."""
    step = _read_json(folder)["loop"].get("step")
    if not isinstance(step, int) or step < 0:
        raise CorruptFileError(f"{folder / STATE} has no step count; the checkpoint is damaged")
    return step


def restore(folder: Path, model, optimizer, scheduler, rank: int = 0, scaler=None) -> tuple[dict, int]:
    """Load a ``save``d checkpoint into the objects and this process's RNG (``rank``'s); returns
    the loop's counters and the number of processes that wrote it."""
    state = read_state(folder)
    load_weights(folder, model)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"][rank % len(state["rng"])])
    return state["loop"], len(state["rng"])


def _refuse_legacy(folder: Path) -> None:
    """Also puts back a checkpoint whose overwrite a kill interrupted (``io.recover``)."""
    recover(folder)
    for name in LEGACY:
        if (folder / name).exists():
            raise CorruptFileError(
                f"{folder / name} is a pickled checkpoint (adapterctl 0.1), which could run code when read and is "
                "never loaded; start the run again without resume=true"
            )


def _read_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    _refuse_legacy(folder)
    path = folder / name
    if not path.is_file():
        raise CorruptFileError(f"{path} is missing: {folder} is not a complete checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFileError(f"{path} is not a readable safetensors file ({e}); the checkpoint is damaged") from None


# JSON encoding of the state trees: plain JSON for numbers, strings and lists; one-key objects
# for what JSON lacks. Decoding accepts exactly these forms and nothing else.
def _encode(value, tensors: dict, path: str):
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"$tensor": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "iu" else value)
        return {"$ndarray": path, "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {"$dict": [[_encode(k, tensors, f"{path}.k{i}"), _encode(v, tensors, f"{path}.{i}")]
                          for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint (at {path or 'the top'})")


def _decode(value, tensors: dict, source: Path):
    if isinstance(value, list):
        return [_decode(v, tensors, source) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"$tensor"} and value["$tensor"] in tensors:
        return tensors[value["$tensor"]]
    if set(value) == {"$ndarray", "dtype"} and value["$ndarray"] in tensors and value["dtype"] in NUMPY_DTYPES:
        return tensors[value["$ndarray"]].numpy().astype(np.dtype(value["dtype"]))
    if set(value) == {"$tuple"} and isinstance(value["$tuple"], list):
        return tuple(_decode(v, tensors, source) for v in value["$tuple"])
    if set(value) == {"$dict"} and isinstance(value["$dict"], list) and all(
            isinstance(kv, list) and len(kv) == 2 for kv in value["$dict"]):
        return {_decode(k, tensors, source): _decode(v, tensors, source) for k, v in value["$dict"]}
    raise CorruptFileError(f"{source} holds an entry adapterctl does not write ({json.dumps(value)[:80]}); "
                           "the checkpoint is damaged")
