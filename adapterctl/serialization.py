"""The on-disk format: AdapterHub's file names, JSON envelope and weight keys.

An adapter folder holds ``adapter_config.json`` + ``adapter.safetensors``, and with its head
``head_config.json`` + ``model_head.safetensors``; a fusion folder holds
``adapter_fusion_config.json`` + ``model_adapter_fusion.safetensors`` (the fused adapters are
loaded on their own). AdapterHub's legacy ``.bin`` files are read with ``weights_only=True``,
never unpickled. Folders are written atomically and never overwritten unless asked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import load_config
from .errors import (
    AdapterConfigError,
    AdapterError,
    CorruptFileError,
    IncompatibleAdapterError,
)
from .io import atomic_dir, recover
from .methods.fusion import load_fusion_config

if TYPE_CHECKING:
    from .model import AdapterModel

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter.safetensors", "pytorch_adapter.bin")
HEAD_CONFIG = "head_config.json"
HEAD_WEIGHTS = ("model_head.safetensors", "pytorch_model_head.bin")
FUSION_CONFIG = "adapter_fusion_config.json"
FUSION_WEIGHTS = ("model_adapter_fusion.safetensors", "pytorch_model_adapter_fusion.bin")
SETUP_CONFIG = "adapter_setup.json"


# -- writing ------------------------------------------------------------------------------


def envelope(model: "AdapterModel", name: str, config: dict) -> dict:
    """AdapterHub's JSON envelope around a config."""
    backbone_class = type(model.backbone).__name__
    return {
        "config": config,
        "hidden_size": model.hidden_size,
        "model_class": backbone_class[: -len("Model")] + "AdapterModel" if backbone_class.endswith("Model") else backbone_class,
        "model_name": model.model_name,
        "model_type": model.config.model_type,
        "name": name,
        "version": f"adapterctl.{__version__}",
    }


def _write(folder: Path, config_name: str, env: dict, weights_name: str, tensors: dict) -> None:
    (folder / config_name).write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / weights_name))


def _select(model: "AdapterModel", pattern: str) -> dict:
    rx = re.compile(pattern)
    return {k: v for k, v in model.state_dict().items() if rx.search(k)}


def write_head(model: "AdapterModel", folder: Path, name: str) -> None:
    """The head ``name`` into ``folder`` (a fully fine-tuned model's folder keeps it too)."""
    head = model.heads[name]
    tensors = {k: v for k, v in model.state_dict().items() if k.startswith(f"heads.{name}.")}
    _write(folder, HEAD_CONFIG, envelope(model, name, head.config), HEAD_WEIGHTS[0], tensors)


def save_adapter(model: "AdapterModel", directory: Path, name: str, with_head: bool = True,
                 overwrite: bool = False, metadata: dict | None = None) -> Path:
    config = model.adapters_config[name].to_dict()
    if config["init_weights"] == "identity":
        # AdapterHub knows no "identity" init and would refuse the file; the init of saved
        # (trained) weights no longer matters, so we write its default.
        config["init_weights"] = "bert"
    with atomic_dir(directory, overwrite) as tmp:
        env = envelope(model, name, config)
        if metadata:
            env["adapterctl"] = metadata
        _write(tmp, ADAPTER_CONFIG, env, ADAPTER_WEIGHTS[0], _select(model, _adapter_keys(name)))
        if with_head and name in model.heads:
            write_head(model, tmp, name)
    return Path(directory)


def save_fusion(model: "AdapterModel", directory: Path, name: str, with_head: bool = True,
                overwrite: bool = False) -> Path:
    with atomic_dir(directory, overwrite) as tmp:
        env = {"adapter_names": name.split(","), **envelope(model, name, model.fusions_config[name].to_dict())}
        _write(tmp, FUSION_CONFIG, env, FUSION_WEIGHTS[0],
               _select(model, rf"\.adapter_fusion_layer\.{re.escape(name)}\."))
        if with_head and name in model.heads:
            write_head(model, tmp, name)
    return Path(directory)


def save_setup(model: "AdapterModel", directory: Path, setup, fusions: list[str], head_setup,
               overwrite: bool = False) -> Path:
    """AdapterHub's ``save_adapter_setup`` layout: ``adapter_setup.json`` and one folder per
    adapter and per fusion, named like it, each with its head."""
    with atomic_dir(directory, overwrite) as tmp:
        text = json.dumps({"adapter_setup": setup.to_dict(), "head_setup": head_setup,
                           "version": f"adapterctl.{__version__}"}, indent=2)
        (tmp / SETUP_CONFIG).write_text(text + "\n")
        for name in setup.flatten():
            save_adapter(model, tmp / name, name)
        for name in fusions:
            save_fusion(model, tmp / name, name)
    return Path(directory)


def read_setup(directory: Path):
    """The setup block and head setup of an ``adapter_setup.json`` (ours or AdapterHub's)."""
    from .composition import Block

    data = read_json(Path(directory) / SETUP_CONFIG)
    head_setup = data.get("head_setup")
    if isinstance(head_setup, dict):
        head_setup = Block.from_dict(head_setup)
    return Block.from_dict(data.get("adapter_setup", data)), head_setup


# -- reading ------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CorruptFileError(f"{path} is missing; the folder is not a complete saved adapter (re-save or re-download it)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}); re-save or re-download the adapter") from None


def read_weights(folder: Path, names: tuple[str, str]) -> dict[str, torch.Tensor]:
    """Safetensors if present, else AdapterHub's legacy ``.bin`` read as tensors only."""
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


def check_backbone(model: "AdapterModel", env: dict, path: Path) -> None:
    """Refuse a file saved for another model family or hidden size, naming what it needs."""
    model_type, hidden = env.get("model_type"), env.get("hidden_size")
    trained_on = f" ({env['model_name']})" if env.get("model_name") else ""
    if model_type and model_type != model.config.model_type:
        raise IncompatibleAdapterError(
            f"{path} was trained for a {model_type} model, but this model is {model.config.model_type}; "
            f"load it into a {model_type} backbone{trained_on}"
        )
    if hidden and hidden != model.hidden_size:
        raise IncompatibleAdapterError(
            f"{path} was trained for hidden size {hidden}, but this model has {model.hidden_size}; "
            f"load it into the backbone it was trained for{trained_on}"
        )


def _adapter_keys(name: str) -> str:
    """State-dict keys of an adapter: its bottlenecks and its invertible block (MAD-X)."""
    return rf"\.(invertible_)?adapters\.{re.escape(name)}\."


def _to_model_keys(model: "AdapterModel", tensors: dict, segment: str, old: str, new: str) -> dict:
    """Rename ``<segment><old>.`` to ``<segment><new>.`` and put the keys under this model's
    prefix (files may carry ``bert.``, ``roberta.`` or no prefix at all). Keys start at the
    layers, or at ``invertible_adapters.`` (MAD-X blocks sit at the base model)."""
    layers = model.family.layers + "."
    out = {}
    for key, value in tensors.items():
        anchor = next((a for a in (layers, "invertible_adapters.") if a in key), None)
        if anchor is None:
            raise CorruptFileError(f"unexpected weight {key!r}: it does not belong to a {model.config.model_type} layer")
        key = f"{model.base_model_prefix}.{key[key.index(anchor):]}"
        out[key.replace(f"{segment}{old}.", f"{segment}{new}.")] = value
    return out


def _assign(model: "AdapterModel", tensors: dict, expected: dict, path: Path) -> None:
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
        if tuple(tensors[key].shape) != tuple(target.shape):
            raise IncompatibleAdapterError(
                f"{path}: {key} has shape {tuple(tensors[key].shape)}, the model expects {tuple(target.shape)}; "
                "the adapter was trained for another backbone or config"
            )
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(tensors[key].to(target.dtype))


def resolve_source(source, model: "AdapterModel | None" = None) -> Path:
    """A local folder, or a Hub identifier resolved (and downloaded) by ``adapterctl.hub``;
    given ``model``, only adapters that fit its backbone are candidates."""
    path = recover(Path(source))  # an overwrite killed between its renames: the previous folder comes back
    if path.is_dir():
        return path
    if path.exists():
        raise AdapterConfigError(f"{path} is a file; give the folder that holds {ADAPTER_CONFIG}")
    from . import hub  # only when a name is not a local folder

    return hub.resolve(str(source), model=model)


def load_adapter(model: "AdapterModel", source, load_as=None, with_head=True, labels=None,
                 overwrite_ok=False) -> str:
    path = resolve_source(source, model)
    env = read_json(path / ADAPTER_CONFIG)
    check_backbone(model, env, path)
    config = load_config(env.get("config", env))
    old = env.get("name") or path.name
    name = load_as or old
    tensors = _to_model_keys(model, read_weights(path, ADAPTER_WEIGHTS), "adapters.", old, name)
    head_env = None
    if with_head and (path / HEAD_CONFIG).exists():
        head_env = read_json(path / HEAD_CONFIG)
        check_backbone(model, head_env, path)
        check_labels(head_env, labels, path)
    if overwrite_ok and (name in model.adapters_config or name in model.heads):
        # Replacing drops the old adapter (and the fusions over it): prove the folder loads first.
        scratch = f"{name}-check"
        try:
            load_adapter(model, path, load_as=scratch, with_head=head_env is not None)
        except AdapterError as error:  # its keys named as the adapter's own
            raise type(error)(str(error).replace(f".{scratch}.", f".{name}.")) from None
        model.delete_adapter(scratch)
        if scratch in model.heads:
            model.delete_head(scratch)
    model.add_adapter(name, config, overwrite_ok=overwrite_ok)
    try:
        rx = re.compile(_adapter_keys(name))
        expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if rx.search(k)}
        _assign(model, tensors, expected, path)
        if head_env is not None:
            load_head(model, path, head_env, old, name, overwrite_ok)
    except BaseException:
        model.delete_adapter(name)
        raise
    return name


def check_labels(head_env: dict, labels, path: Path) -> None:
    if labels is None:
        return
    label2id = head_env.get("config", {}).get("label2id") or {}
    saved = [label for label, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
    if saved and list(map(str, saved)) != list(map(str, labels)):
        raise IncompatibleAdapterError(
            f"the head in {path} predicts labels {saved}, but the task has {list(labels)}; "
            "load it with with_head=False and train a new head for this task"
        )


def load_head(model: "AdapterModel", path: Path, env: dict, old: str, name: str, overwrite_ok: bool) -> None:
    """The head saved as ``old`` in ``path`` (``env``: its head_config.json), added as ``name``."""
    config = dict(env["config"])
    head_type = config.pop("head_type")
    label2id = config.pop("label2id", None)
    if label2id:
        config["id2label"] = {int(i): label for label, i in label2id.items()}
    tensors = {k.replace(f"heads.{old}.", f"heads.{name}.", 1): v
               for k, v in read_weights(path, HEAD_WEIGHTS).items() if k.startswith(f"heads.{old}.")}
    if name in model.heads and not overwrite_ok:
        raise AdapterConfigError(f"a head named {name!r} already exists; pass overwrite_ok=True or load_as=...")
    model.add_head(name, head_type, overwrite_ok=True, **config)
    try:
        expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if k.startswith(f"heads.{name}.")}
        _assign(model, tensors, expected, path)
    except BaseException:
        model.delete_head(name)
        raise


def load_fusion(model: "AdapterModel", path: Path, load_as=None, with_head=True, overwrite_ok=False) -> str:
    env = read_json(path / FUSION_CONFIG)
    check_backbone(model, env, path)
    old = env.get("name") or path.name
    name = load_as or old
    tensors = _to_model_keys(model, read_weights(path, FUSION_WEIGHTS), ".adapter_fusion_layer.", old, name)
    model.add_fusion(name.split(","), load_fusion_config(env["config"]), overwrite_ok=overwrite_ok)
    try:
        expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if f".adapter_fusion_layer.{name}." in k}
        _assign(model, tensors, expected, path)
        if with_head and (path / HEAD_CONFIG).exists():
            load_head(model, path, read_json(path / HEAD_CONFIG), old, name, overwrite_ok)
    except BaseException:
        model.delete_fusion(name)
        raise
    return name
