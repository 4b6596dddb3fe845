"""PEFT's adapter folders: ``adapter_config.json`` (with ``peft_type``) and
``adapter_model.safetensors`` (or a legacy ``adapter_model.bin``, read with ``weights_only=True``),
keys ``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight`` / ``.ia3_l``.

A PEFT folder loads as one of our LoRA or IA3 adapters when what it adapts is a set of the family
spec's projections (``q k v o``, ``intermediate``, ``output``), the same set in every adapted
layer: the modules are read from the weight keys, so ``target_modules`` as a list, a regex or
``all-linear`` need no interpretation. ``use_rslora`` (scaling ``alpha / sqrt(r)``) becomes
``alpha = lora_alpha * sqrt(r)``, ``layers_to_transform`` ``leave_out``; a PEFT feature that
changes the computation in a way our adapters cannot express is a one-line error naming it
(DoRA: PEFT's puts the bias outside the magnitude and norms ``W + s B A``, AdapterHub's inside
and ``W + B A``; per-module ranks; ``modules_to_save``; IA3's ``feedforward_modules``, which scale
a projection's input, not its output; modules outside the projections, e.g. ``pooler.dense`` or
Llama's ``gate_proj``).

Written folders hold paths relative to the base model (``AutoModel``), the form PEFT loads with
``PeftModel.from_pretrained(AutoModel.from_pretrained(<backbone>), folder)``.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import AdapterConfigError, CorruptFileError, IncompatibleAdapterError
from ..io import atomic_dir
from .files import assign, read_json, read_weights, write_json, write_weights

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
ATTENTION = ("q", "k", "v", "o")
SUFFIXES = {"LORA": {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B"}, "IA3": {".ia3_l": "lora_B"}}
# PEFT fields that change what an adapter computes, and the value under which we can follow it
UNSUPPORTED = {"use_dora": False, "fan_in_fan_out": False, "bias": "none", "lora_bias": False, "modules_to_save": None,
               "rank_pattern": {}, "alpha_pattern": {}, "layer_replication": None, "target_parameters": None,
               "trainable_token_indices": None, "alora_invocation_tokens": None, "use_bdlora": None}


def is_peft_folder(path: Path) -> bool:
    """A folder PEFT wrote: its ``adapter_config.json`` names a ``peft_type``."""
    config = Path(path) / CONFIG
    try:
        return config.is_file() and "peft_type" in read_json(config)
    except CorruptFileError:
        return False  # not JSON: the AdapterHub reader reports it


def load(model, path: Path, load_as: str | None = None, set_active: bool = False, overwrite_ok: bool = False) -> str:
    """Load a PEFT folder into ``model`` as the adapter ``load_as`` (default: the folder's name)."""
    name = load_as or Path(path).name
    config, tensors = _read(model, Path(path), name)
    model.add_adapter(name, config, overwrite_ok=overwrite_ok)
    try:
        assign(tensors, model._state_of(model.adapter_modules(name), keep_vars=True), path)
    except BaseException:
        model.delete_adapter(name)
        raise
    if set_active:
        model.set_active_adapters(name)
    return name


def _read(model, path: Path, name: str):
    peft = read_json(path / CONFIG)
    kind = peft.get("peft_type")
    if kind not in SUFFIXES:
        raise AdapterConfigError(f"{path} is a PEFT {kind} adapter; adapterctl reads PEFT's LORA and IA3 adapters")
    for field, neutral in UNSUPPORTED.items():
        if peft.get(field, neutral) not in (neutral, None, False, {}, [], "none"):
            raise AdapterConfigError(f"{path}: PEFT's {field}={peft[field]!r} is not supported by adapterctl; "
                                     f"retrain or re-save the adapter without it")
    weights = read_weights(path, WEIGHTS)
    places = _places(model)
    adapted: dict[tuple, dict[str, object]] = {}  # (stack, layer, key) -> {our param: tensor}
    tensors = {}
    for key, tensor in weights.items():
        module, param = _split(key, SUFFIXES[kind], path)
        module = _backbone_path(model, module)
        if module not in places:
            raise AdapterConfigError(
                f"{path} adapts {module}, which adapterctl's LoRA cannot place on a {model.config.model_type} model "
                f"(it adapts the projections {', '.join(sorted({p[2] for p in places.values()}))})")
        adapted.setdefault(places[module], {})[param] = tensor
        tensors[f"{model.base_model_prefix}.{module}.loras.{name}.{param}"] = tensor.contiguous()
    if not adapted:
        raise CorruptFileError(f"{path}: no PEFT {kind} weights in {WEIGHTS[0]}; re-save the adapter")
    return _config(model, peft, kind, adapted, path), tensors


def _split(key: str, suffixes: dict[str, str], path: Path) -> tuple[str, str]:
    for suffix, param in suffixes.items():
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            return (module[len(PREFIX):] if module.startswith(PREFIX) else module), param
    raise AdapterConfigError(f"{path}: PEFT weight {key} is not one adapterctl reads (only "
                             f"{', '.join(suffixes)}); modules_to_save and trainable tokens are not supported")


def _places(model) -> dict[str, tuple]:
    """Backbone-relative module path -> (stack, layer, projection key) for every projection but
    fused ones (GPT-2's ``c_attn``: PEFT adapts it whole, we per slice)."""
    paths = {id(m): n for n, m in model.backbone.named_modules()}
    places = {}
    for stack, idx, layer in model.iter_layers():
        spec = model.family.stacks[stack]
        for key, rels in spec.projections.items():
            for rel in (rels,) if isinstance(rels, str) else rels:
                if rel not in spec.fused:
                    places[paths[id(layer.get_submodule(rel))]] = (stack, idx, key)
    return places


def _backbone_path(model, module: str) -> str:
    """PEFT's path is relative to the model it wrapped: the base model, or a task model holding
    it under its prefix (``model.layers.0...`` in a ``LlamaForCausalLM``)."""
    prefix = model.base_model_prefix + "."
    return module[len(prefix):] if module.startswith(prefix) else module


def _config(model, peft: dict, kind: str, adapted: dict, path: Path):
    from ..methods.lora.config import LoRAConfig

    keys_per_layer: dict[tuple, set] = {}
    for stack, idx, key in adapted:
        keys_per_layer.setdefault((stack, idx), set()).add(key)
    kinds = {frozenset(keys) for keys in keys_per_layer.values()}
    if len(kinds) > 1:
        raise AdapterConfigError(f"{path} adapts different projections in different layers; an adapterctl LoRA "
                                 "adapts the same ones in each layer it covers")
    keys = next(iter(kinds))
    layers = {idx for _, idx in keys_per_layer}
    fields = dict(selfattn_lora=any(k in ATTENTION for k in keys),
                  attn_matrices=[k for k in ATTENTION if k in keys] or ["q", "v"],
                  intermediate_lora="intermediate" in keys, output_lora="output" in keys,
                  leave_out=sorted({idx for _, idx, _ in model.iter_layers()} - layers))
    if kind == "IA3":
        feedforward = peft.get("feedforward_modules") or []
        if feedforward:
            raise AdapterConfigError(
                f"{path}: PEFT's IA3 feedforward_modules {feedforward} scale their projection's input; "
                "adapterctl's IA3 (AdapterHub's) scales outputs only")
        return LoRAConfig(**fields, r=1, alpha=1, composition_mode="scale", init_weights="ia3")
    ranks = {tuple(p["lora_A"].shape)[0] for p in adapted.values()}
    r = peft.get("r", 8)
    if ranks != {r}:
        raise IncompatibleAdapterError(f"{path}: weights of rank {sorted(ranks)} but the config says r={r}; "
                                       "re-save the adapter")
    alpha = peft.get("lora_alpha", 8)
    if peft.get("use_rslora"):
        alpha = alpha * math.sqrt(r)  # PEFT's scaling alpha / sqrt(r) as our alpha / r
    if float(alpha).is_integer():  # LoRAConfig.alpha is an integer, as AdapterHub's
        alpha = int(alpha)
    return LoRAConfig(**fields, r=r, alpha=alpha, dropout=float(peft.get("lora_dropout") or 0.0))


def save(model, directory, name: str, overwrite: bool = False) -> Path:
    """Write the adapter ``name`` as a PEFT folder (plain LoRA, or IA3 scaling outputs)."""
    config = model.adapters_config[name]
    if config.method != "lora" or config.use_gating or config.use_dora or config.is_vera:
        raise AdapterConfigError(f"{name!r} cannot be written as a PEFT folder: PEFT's files hold plain LoRA and "
                                 "IA3 adapters (no gating; DoRA and VeRA compute otherwise there)")
    scale = config.composition_mode == "scale"
    paths = {id(m): n for n, m in model.backbone.named_modules()}
    tensors, targets = {}, []
    for (stack, idx, key), layer in sorted(model._method("lora").layers.items()):
        if name not in layer.loras:
            continue
        module = paths[id(layer.linear)]
        targets.append(module)
        lora = layer.loras[name]
        if scale:  # PEFT's IA3 has no alpha: the vector carries it
            tensors[f"{PREFIX}{module}.ia3_l"] = lora.lora_B.detach() * lora.scaling
        else:
            tensors[f"{PREFIX}{module}.lora_A.weight"] = lora.lora_A.detach()
            tensors[f"{PREFIX}{module}.lora_B.weight"] = lora.lora_B.detach()
    peft = {"peft_type": "IA3" if scale else "LORA", "task_type": None, "inference_mode": True,
            "base_model_name_or_path": model.model_name, "target_modules": targets}
    if scale:
        peft.update(feedforward_modules=[], init_ia3_weights=True, fan_in_fan_out=False)
    else:
        peft.update(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
                    fan_in_fan_out=False, use_rslora=False, use_dora=False, init_lora_weights=True)
    with atomic_dir(directory, overwrite) as tmp:
        write_json(tmp / CONFIG, peft)
        write_weights(tmp / WEIGHTS[0], tensors)
    return Path(directory)
