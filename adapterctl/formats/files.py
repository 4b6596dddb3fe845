"""Reading and writing the files of saved adapters, whatever their format: JSON configs and
weights (safetensors; a legacy ``.bin`` read with ``weights_only=True``, never unpickled), and
copying read weights into a model all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CorruptFileError, IncompatibleAdapterError


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CorruptFileError(f"{path} is missing; the folder is not a complete saved adapter (re-save or re-download it)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        problem = "nested too deep" if isinstance(e, RecursionError) else e
        raise CorruptFileError(f"{path} is not valid JSON ({problem}); re-save or re-download the adapter") from None


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_weights(folder: Path, names: tuple[str, str]) -> dict[str, torch.Tensor]:
    """Safetensors if present, else the legacy ``.bin`` read as tensors only."""
    safe, legacy = (folder / n for n in names)
    if safe.is_file():
        try:
            return load_file(str(safe))
        except (SafetensorError, OSError, ValueError) as e:
            raise CorruptFileError(f"{safe} is truncated or corrupt ({e}); re-save or re-download the adapter") from None
    if legacy.is_file():
        try:
            state = torch.load(str(legacy), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - every failure here means "not a plain tensor file"
            raise CorruptFileError(
                f"{legacy} was refused: it is corrupt or holds something other than tensors ({type(e).__name__}); "
                "nothing in it was executed. Use a safetensors file or re-save the adapter"
            ) from None
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise CorruptFileError(f"{legacy} holds something other than a dict of tensors; re-save the adapter")
        return state
    raise CorruptFileError(f"{folder} has no weights file ({safe.name} or {legacy.name}); re-save or re-download it")


def write_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def assign(tensors: dict, expected: dict, path: Path) -> None:
    """Copy ``tensors`` into ``expected`` (model keys -> parameters), all or nothing."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CorruptFileError(
            f"{path}: weights do not match the config"
            + (f"; missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "")
            + (f"; unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}" if unexpected else "")
            + ". The file is truncated, tampered or from another adapter: re-save or re-download it"
        )
    for key, target in expected.items():
        # A complex, integer or bool tensor would lose its imaginary part or pass for trained weights.
        if target.is_floating_point() and not tensors[key].is_floating_point():
            raise CorruptFileError(
                f"{path}: {key} is stored as {str(tensors[key].dtype).removeprefix('torch.')}; adapter weights are "
                "real floating-point tensors. The file was not written by an adapter library: re-save it with float weights"
            )
        if tuple(tensors[key].shape) != tuple(target.shape):
            raise IncompatibleAdapterError(
                f"{path}: {key} has shape {tuple(tensors[key].shape)}, the model expects {tuple(target.shape)}; "
                "the adapter was trained for another backbone or config"
            )
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[key].to(target.dtype))
