"""AdapterHub's on-disk format: its file names, JSON envelope and weight keys.

An adapter folder holds ``adapter_config.json`` + ``adapter.safetensors``, and with its head
``head_config.json`` + ``model_head.safetensors``; a fusion folder holds
``adapter_fusion_config.json`` + ``model_adapter_fusion.safetensors``; a setup folder
``adapter_setup.json`` beside one folder per adapter and fusion. Only files here: the model
decides what to save and where loaded weights go (``core/model.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import __version__
from ..core.composition import Block
from ..errors import IncompatibleAdapterError
from .files import read_json, read_weights, write_json, write_weights

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter.safetensors", "pytorch_adapter.bin")
HEAD_CONFIG = "head_config.json"
HEAD_WEIGHTS = ("model_head.safetensors", "pytorch_model_head.bin")
FUSION_CONFIG = "adapter_fusion_config.json"
FUSION_WEIGHTS = ("model_adapter_fusion.safetensors", "pytorch_model_adapter_fusion.bin")
SETUP_CONFIG = "adapter_setup.json"


def envelope(backbone: dict, name: str, config: dict) -> dict:
    """AdapterHub's JSON envelope around a config; ``backbone``: hidden_size, model_class,
    model_name and model_type of the model it was trained on."""
    return {"config": config, **backbone, "name": name, "version": f"adapterctl.{__version__}"}


def write_adapter(folder: Path, env: dict, tensors: dict) -> None:
    write_json(folder / ADAPTER_CONFIG, env)
    write_weights(folder / ADAPTER_WEIGHTS[0], tensors)


def write_head(folder: Path, env: dict, tensors: dict) -> None:
    write_json(folder / HEAD_CONFIG, env)
    write_weights(folder / HEAD_WEIGHTS[0], tensors)


def write_fusion(folder: Path, env: dict, tensors: dict) -> None:
    write_json(folder / FUSION_CONFIG, {"adapter_names": env["name"].split(","), **env})
    write_weights(folder / FUSION_WEIGHTS[0], tensors)


def write_setup(folder: Path, setup: Block, head_setup) -> None:
    head_setup = head_setup.to_dict() if isinstance(head_setup, Block) else head_setup
    text = json.dumps({"adapter_setup": setup.to_dict(), "head_setup": head_setup,
                       "version": f"adapterctl.{__version__}"}, indent=2)
    (folder / SETUP_CONFIG).write_text(text + "\n")


def read_adapter(folder: Path) -> tuple[dict, dict]:
    """An adapter folder's envelope and weights (ours or AdapterHub's, safetensors or ``.bin``)."""
    return read_json(folder / ADAPTER_CONFIG), read_weights(folder, ADAPTER_WEIGHTS)


def has_head(folder: Path) -> bool:
    """A head of ours or of AdapterHub's flex models; its plugin models write ``"config": null``
    beside the model's own head, which is not part of the adapter."""
    return (folder / HEAD_CONFIG).exists() and read_json(folder / HEAD_CONFIG).get("config") is not None


def read_head(folder: Path) -> tuple[dict, dict]:
    return read_json(folder / HEAD_CONFIG), read_weights(folder, HEAD_WEIGHTS)


def read_fusion(folder: Path) -> tuple[dict, dict]:
    return read_json(folder / FUSION_CONFIG), read_weights(folder, FUSION_WEIGHTS)


def read_setup(folder: Path):
    """The setup block and head setup of an ``adapter_setup.json`` (ours or AdapterHub's)."""
    data = read_json(Path(folder) / SETUP_CONFIG)
    head_setup = data.get("head_setup")
    if isinstance(head_setup, dict):
        head_setup = Block.from_dict(head_setup)
    return Block.from_dict(data.get("adapter_setup", data)), head_setup


def check_backbone(backbone: dict, env: dict, path: Path) -> None:
    """Refuse a file saved for another model family or hidden size, naming what it needs."""
    model_type, hidden = env.get("model_type"), env.get("hidden_size")
    trained_on = f" ({env['model_name']})" if env.get("model_name") else ""
    if model_type and model_type != backbone["model_type"]:
        raise IncompatibleAdapterError(
            f"{path} was trained for a {model_type} model, but this model is {backbone['model_type']}; "
            f"load it into a {model_type} backbone{trained_on}"
        )
    if hidden and hidden != backbone["hidden_size"]:
        raise IncompatibleAdapterError(
            f"{path} was trained for hidden size {hidden}, but this model has {backbone['hidden_size']}; "
            f"load it into the backbone it was trained for{trained_on}"
        )


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


def to_model_keys(tensors: dict, expected, prefix: str, old: str, new: str, containers) -> dict:
    """File keys -> this model's keys: the adapter's name ``old`` becomes ``new`` after each of
    ``containers`` (``adapters.<name>.``, ``loras.<name>.``, ``heads.<name>.`` ...), and the
    base-model prefix becomes ``prefix`` (files carry ``bert.``, ``model.``, or none at all).
    A key that fits nothing in ``expected`` stays as it is, for the caller to refuse."""
    rename = re.compile(rf"(^|\.)({'|'.join(map(re.escape, containers))})\.{re.escape(old)}\.")
    out = {}
    for key, value in tensors.items():
        key = rename.sub(lambda m: f"{m.group(1)}{m.group(2)}.{new}.", key)
        candidates = (key, f"{prefix}.{key}", f"{prefix}.{key.split('.', 1)[-1]}")
        out[next((k for k in candidates if k in expected), key)] = value
    return out
