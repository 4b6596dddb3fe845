"""PEFT's adapter folders: ``adapter_config.json`` (with ``peft_type``) and
``adapter_model.safetensors`` (or a legacy ``adapter_model.bin``, read with ``weights_only=True``),
keys ``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight`` /
``.lora_magnitude_vector`` / ``.ia3_l`` / ``.vera_lambda_b`` / ``.vera_lambda_d`` / AdaLoRA's
``.lora_A`` / ``.lora_E`` / ``.lora_B`` (and VeRA's
``base_model.vera_A`` / ``vera_B``), and ``<module path>.weight`` for ``modules_to_save``.

A PEFT folder loads as one of our LoRA, IA3 or VeRA adapters (AdaLoRA's as LoRA: ``A diag(E)``
as A, its scaling ``lora_alpha / (init_r + 1e-5)`` as alpha, which PEFT keeps for the ranks
that rank allocation leaves; a module left with none is left out) when what it adapts are Linear
(or Conv1D) modules of the backbone. The modules are read from the weight keys, so
``target_modules`` as a list, a regex or ``all-linear`` need no interpretation: where
AdapterHub's placement fields (projection flags, ``leave_out``) name exactly those modules the
config uses them, else our ``target_modules`` lists each path (Llama's ``gate_proj``, BERT's
``pooler.dense``, modules that differ per layer). Each module's rank is its ``lora_A``'s, its
alpha PEFT's ``alpha_pattern`` match; those that differ from ``r`` / ``lora_alpha`` become our
``rank_pattern`` / ``alpha_pattern`` entries under their exact paths. ``use_rslora`` (scaling
``alpha / sqrt(r)``) becomes ``alpha * sqrt(r)``, ``use_dora`` DoRA with
``dora_variant="peft"``, IA3's ``feedforward_modules`` ours (the modules PEFT's rule picks, by
path). PEFT's VeRA vectors ``lambda_b``, ``lambda_d`` are AdapterHub's diagonal ``vera_B``,
``vera_D`` with ``alpha = r`` (PEFT does not scale); a VeRA is written back while those are
diagonal (AdapterHub's trains the full matrices: then it is refused). A fused projection
(GPT-2's ``c_attn``, GPT-NeoX's ``query_key_value``) takes PEFT's one pair as one of ours per
slice, each reading the same A, B's rows in our slice-by-slice order. ``modules_to_save``
naming the task model's head (``lm_head``, ``classifier``, ``score``) becomes our head of the
adapter's name. What our adapters cannot express is a one-line error naming it (``bias``, LoRA
on embeddings, trainable tokens, inits that change the base weights such as PiSSA, ...).

Written folders hold paths relative to the model the backbone's checkpoint is, the one PEFT
will wrap again: the task model (``PeftModel.from_pretrained(AutoModelForCausalLM...)``) where
it came with its head (our head ``default``; the adapter's own head of that kind is written as
``modules_to_save``), else the base model (``AutoModel``). A fused projection's pairs become one
of rank ``n r`` with a block-diagonal B.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from transformers.pytorch_utils import Conv1D

from ..errors import AdapterConfigError, CorruptFileError, IncompatibleAdapterError
from ..io import atomic_dir
from .files import assign, read_json, read_weights, write_json, write_weights

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
TASKS = {"causal_lm": "CAUSAL_LM", "classification": "SEQ_CLS", "tagging": "TOKEN_CLS"}  # head type -> PEFT's
ATTENTION = ("q", "k", "v", "o")
SUFFIXES = {"LORA": {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B", ".lora_magnitude_vector": "m.weight"},
            "IA3": {".ia3_l": "lora_B"}, "VERA": {".vera_lambda_b": "vera_B", ".vera_lambda_d": "vera_D"},
            "ADALORA": {".lora_A": "lora_A", ".lora_B": "lora_B", ".lora_E": "lora_E"}}
# LoRA inits that change the base weights (W - B A at init), which PEFT redoes on loading and we do not
BASE_CHANGING_INITS = ("pissa", "corda", "olora", "loftq", "lora_ga")
VERA_SHARED = {"base_model.vera_A": "lora_A", "base_model.vera_B": "lora_B"}  # PEFT's VeRA projections, saved once
# PEFT fields that change what an adapter computes, and the value under which we can follow it
# (fan_in_fan_out only says how a Conv1D stores its weight: PEFT sets it from the module's type)
UNSUPPORTED = {"bias": "none", "lora_bias": False, "layer_replication": None, "target_parameters": None,
               "trainable_token_indices": None, "alora_invocation_tokens": None, "use_bdlora": None,
               "use_qalora": False, "arrow_config": None, "velora_config": None, "monteclora_config": None,
               "kasa_config": None}


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
    config, tensors, saved = _read(model, Path(path), name)
    model.add_adapter(name, config, overwrite_ok=overwrite_ok)
    try:
        assign(tensors, model._state_of(model.adapter_modules(name), keep_vars=True), path)
        if saved:
            _load_head(model, name, saved, path, overwrite_ok)
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
        raise AdapterConfigError(f"{path} is a PEFT {kind} adapter; adapterctl reads PEFT's LORA, ADALORA, IA3 and VERA "
                                 "adapters")
    for field, neutral in UNSUPPORTED.items():
        if peft.get(field, neutral) not in (neutral, None, False, {}, [], "none"):
            raise AdapterConfigError(f"{path}: PEFT's {field}={peft[field]!r} is not supported by adapterctl; "
                                     f"retrain or re-save the adapter without it")
    init = peft.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS):
        raise AdapterConfigError(f"{path}: PEFT's init_lora_weights={init!r} trains against changed base weights, which "
                                 "adapterctl does not recreate; convert it to a plain LoRA with PEFT's save_pretrained("
                                 "..., path_initial_model_for_weight_conversion=...) and load that")
    weights = read_weights(path, WEIGHTS)
    places = _places(model)
    adapted: dict[str, dict] = {}  # module path -> {"path", "peft_path", "keys", our param: tensor}
    tensors, saved = {}, {}  # saved: modules_to_save's module path -> {param: tensor}
    if kind == "VERA" and not VERA_SHARED.keys() <= weights.keys():
        raise AdapterConfigError(f"{path}: PEFT's VeRA was saved without its random projections (save_projection="
                                 "False: PEFT redraws them from projection_prng_key); re-save it with save_projection=True")
    for key, tensor in weights.items():
        if kind == "VERA" and key in VERA_SHARED:
            tensors[f"{model.base_model_prefix}.shared_parameters.{name}.{VERA_SHARED[key]}"] = tensor.contiguous()
            continue
        module, _, param = key.removeprefix(PREFIX).rpartition(".")
        if any(module == m or module.endswith("." + m) for m in peft.get("modules_to_save") or ()):
            saved.setdefault(module, {})[param] = tensor
            continue
        peft_path, param = _split(key, SUFFIXES[kind], path)
        module = _backbone_path(model, peft_path)
        if module not in places:
            raise AdapterConfigError(f"{path} adapts {module}, which is not a Linear layer of this "
                                     f"{model.config.model_type} model; adapterctl's LoRA adapts only those")
        stack, idx, keys = places[module]
        if param == "m.weight" or kind == "IA3":  # DoRA's (out,), IA3's (out, 1) or feed-forward (1, in): ours (n, 1)
            tensor = tensor.reshape(-1, 1)
        elif kind == "VERA":  # PEFT's vectors lambda_b (out,), lambda_d (r,): AdapterHub's diagonal matrices
            tensor = torch.diag(tensor)
        feedforward = kind == "IA3" and _feedforward(peft.get("feedforward_modules") or [], peft_path)
        if len(keys) > 1 and not feedforward:  # a fused projection: PEFT's one pair over q | k | v, each slice's reads its A
            tensor = tensor.repeat(len(keys), 1) if param in ("lora_A", "lora_E") else \
                tensor[_fused_rows(model, stack, keys, tensor)]
        adapted.setdefault(module, {"path": module, "peft_path": peft_path, "keys": keys})[param] = tensor
        if param != "lora_E":
            tensors[f"{model.base_model_prefix}.{module}.loras.{name}.{param}"] = tensor.contiguous()
    if not adapted:
        raise CorruptFileError(f"{path}: no PEFT {kind} weights in {WEIGHTS[0]}; re-save the adapter")
    for module, entry in list(adapted.items()) if kind == "ADALORA" else ():  # AdaLoRA's B diag(E) A as LoRA's B A
        key = f"{model.base_model_prefix}.{module}.loras.{name}"
        entry["lora_A"] = entry["lora_A"] * entry.pop("lora_E")
        tensors[f"{key}.lora_A"] = entry["lora_A"].contiguous()
        if not entry["lora_A"].shape[0]:  # rank allocation pruned every rank: the module adds nothing, so it is left out
            del adapted[module], tensors[f"{key}.lora_A"], tensors[f"{key}.lora_B"]
    if not adapted:
        raise AdapterConfigError(f"{path}: AdaLoRA's rank allocation pruned every rank of every module, so the adapter "
                                 "changes nothing; retrain it with a larger target_r")
    return _config(model, peft, kind, adapted, places, path), tensors, saved


def _load_head(model, name: str, saved: dict, path: Path, overwrite_ok: bool) -> None:
    """PEFT's ``modules_to_save``: trained copies of the task model's head modules (``lm_head``,
    ``classifier``, ``score``) become our head ``name``, a copy of the head ``default`` that the
    backbone's checkpoint brought (the family's static head map says which layer is which module)
    with those weights; as in PEFT, the backbone's own head stays as it was."""
    layers, default = _head_layers(model), model.heads["default"] if "default" in model.heads else None
    unknown = sorted(set(saved) - set(layers))
    if unknown:
        raise AdapterConfigError(
            f"{path}: PEFT's modules_to_save {unknown} is not a prediction head adapterctl maps on this model (it maps "
            f"{sorted(layers) or 'none'}: the head of a checkpoint loaded with it, e.g. a *ForCausalLM); load such a "
            "backbone or re-save the adapter without modules_to_save")
    embeddings = model.backbone.get_input_embeddings().weight
    if any(default[layers[m]].weight is embeddings for m in saved):
        raise AdapterConfigError(f"{path}: PEFT's modules_to_save {sorted(saved)} is a trained copy of a head tied to "
                                 "the input embeddings; adapterctl's head would share them: untie the backbone first")
    head = model.add_head(name, overwrite_ok=overwrite_ok, set_active=False, **default.config)
    try:
        head.load_state_dict(default.state_dict())
        own = dict(head.named_parameters())
        tensors = {f"{layers[m]}.{p}": t for m, params in saved.items() for p, t in params.items()}
        assign(tensors, {k: v for k, v in own.items() if k.split(".")[0] in {str(layers[m]) for m in saved}}, path)
    except BaseException:
        model.delete_head(name)
        raise


def _wrapped(model) -> tuple[str, str | None]:
    """The prefix of the backbone's module paths and PEFT's ``task_type`` in the model PEFT will
    wrap: the task model (``*ForCausalLM``) where the checkpoint came with its head, else the
    base model (``AutoModel``)."""
    if not _head_layers(model):
        return "", None
    return model.base_model_prefix + ".", TASKS.get(model.heads["default"].config["head_type"])


def _head_layers(model) -> dict[str, int]:
    """The task model's head modules -> the index of their layer in our head ``default`` (the
    checkpoint's head, by the family's static head map); empty without such a head."""
    spec = next(filter(None, map(model.family.static_head, model.config.architectures or [])), None)
    if spec is None or "default" not in model.heads:
        return {}
    return {module: i for i, module in enumerate(spec.layers) if module}


def _split(key: str, suffixes: dict[str, str], path: Path) -> tuple[str, str]:
    for suffix, param in suffixes.items():
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            return (module[len(PREFIX):] if module.startswith(PREFIX) else module), param
    raise AdapterConfigError(f"{path}: PEFT weight {key} is not one adapterctl reads (only "
                             f"{', '.join(suffixes)}); modules_to_save and trainable tokens are not supported")


def _places(model) -> dict[str, tuple]:
    """Backbone-relative path -> (stack, layer, the projection keys it serves) of every Linear or
    Conv1D LoRA may adapt: a fused projection (GPT-2's ``c_attn``) serves all its slices, a
    module the family spec does not name (Llama's ``gate_proj``, BERT's ``pooler.dense``) none."""
    from ..methods.lora.model import linear_modules

    places = {}
    for path, (stack, idx, key, _, slices) in linear_modules(model).items():
        spec = model.family.stacks.get(stack)
        served = (key,) if spec is not None and key in spec.projections else ()
        places[path] = (stack, idx, tuple(key.split("+")) if slices else served)
    return places


def _fused_rows(model, stack: str, keys: tuple, tensor):
    """Our slice-by-slice order of a fused output's rows (GPT-NeoX lays them out per head)."""
    from ..methods.lora.layer import fused_rows

    spec = model.family.stacks[stack]
    return fused_rows(len(keys), tensor.shape[0], getattr(model.config, spec.fused_groups) if spec.fused_groups else 1)


def _backbone_path(model, module: str) -> str:
    """PEFT's path is relative to the model it wrapped: the base model, or a task model holding
    it under its prefix (``model.layers.0...`` in a ``LlamaForCausalLM``)."""
    prefix = model.base_model_prefix + "."
    return module[len(prefix):] if module.startswith(prefix) else module


def _config(model, peft: dict, kind: str, adapted: dict, places: dict, path: Path):
    from ..methods.lora.config import LoRAConfig, pattern_key

    fields = _placement(model, adapted, places)
    if kind == "VERA":  # lambda_b B (lambda_d A x) with no scaling: alpha = r
        return LoRAConfig(**fields, r=peft.get("r", 256), alpha=peft.get("r", 256), vera_d=peft.get("d_initial", 0.1),
                          vera_b=0.0, init_weights="vera", dropout=float(peft.get("vera_dropout") or 0.0))
    if kind == "ADALORA":  # scaling lora_alpha / (init_r + 1e-5), also where rank allocation kept fewer ranks
        ranks = {m["path"]: m["lora_A"].shape[0] // max(1, len(m["keys"])) for m in adapted.values()}
        r, scaling = peft.get("init_r", 12), peft.get("lora_alpha", 8) / (peft.get("init_r", 12) + 1e-5)
        alphas = {p: _number(scaling * rank) for p, rank in ranks.items()}
        alpha = _number(scaling * r)
        return LoRAConfig(**fields, r=r, alpha=alpha, dropout=float(peft.get("lora_dropout") or 0.0),
                          rank_pattern={p: v for p, v in sorted(ranks.items()) if v != r},
                          alpha_pattern={p: v for p, v in sorted(alphas.items()) if v != alpha})
    if kind == "IA3":
        feedforward = peft.get("feedforward_modules") or []
        return LoRAConfig(**fields, r=1, alpha=1, composition_mode="scale", init_weights="ia3",
                          feedforward_modules=sorted(m["path"] for m in adapted.values()
                                                     if _feedforward(feedforward, m["peft_path"])))
    r, alpha = peft.get("r", 8), peft.get("lora_alpha", 8)
    rank_pattern, alpha_pattern = peft.get("rank_pattern") or {}, peft.get("alpha_pattern") or {}
    ranks, alphas = {}, {}
    for module in adapted.values():
        rank = module["lora_A"].shape[0] // max(1, len(module["keys"]))
        if rank != rank_pattern.get(pattern_key(rank_pattern, module["peft_path"]), r):
            raise IncompatibleAdapterError(f"{path}: {module['path']} has weights of rank {rank}, not the rank its "
                                           "config (r, rank_pattern) gives; re-save the adapter")
        module_alpha = alpha_pattern.get(pattern_key(alpha_pattern, module["peft_path"]), alpha)
        if peft.get("use_rslora"):  # PEFT's scaling alpha / sqrt(r) as our alpha / r
            module_alpha *= math.sqrt(rank)
        ranks[module["path"]], alphas[module["path"]] = rank, _number(module_alpha)
    base_alpha = _number(alpha * math.sqrt(r) if peft.get("use_rslora") else alpha)
    dora = bool(peft.get("use_dora"))
    return LoRAConfig(**fields, r=r, alpha=base_alpha, dropout=float(peft.get("lora_dropout") or 0.0),
                      use_dora=dora, dora_variant="peft" if dora else "adapterhub",
                      rank_pattern={p: v for p, v in sorted(ranks.items()) if v != r},
                      alpha_pattern={p: v for p, v in sorted(alphas.items()) if v != base_alpha})


def _placement(model, adapted: dict, places: dict) -> dict:
    """AdapterHub's placement fields (projection flags and ``leave_out``) where they adapt exactly
    the modules PEFT did, else ``target_modules`` naming each."""
    keys = {k for m in adapted.values() for k in m["keys"]}
    layers = {places[p][:2] for p in adapted}
    fields = dict(selfattn_lora=any(k in ATTENTION for k in keys),
                  attn_matrices=[k for k in ATTENTION if k in keys] or ["q", "v"],
                  intermediate_lora="intermediate" in keys, output_lora="output" in keys,
                  leave_out=sorted({idx for _, idx, _ in model.iter_layers()} - {idx for _, idx in layers}))
    flags = {p for p, (stack, idx, served) in places.items() if (stack, idx) in layers and set(served) & keys}
    if all(m["keys"] for m in adapted.values()) and flags == set(adapted):
        return fields
    return dict(target_modules=sorted(adapted))


def _feedforward(feedforward, module: str) -> bool:
    """PEFT's IA3 rule: a regex string matches the whole path, a list's names its end."""
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, module) is not None
    return any(module.endswith(name) for name in feedforward)


def _number(value: float) -> int | float:
    """An integer where it is one (AdapterHub's LoRAConfig.alpha is an int)."""
    return int(value) if float(value).is_integer() else value


def save(model, directory, name: str, overwrite: bool = False) -> Path:
    """Write the adapter ``name`` as a PEFT folder: plain LoRA (per-module ranks and alphas too),
    PEFT's DoRA, IA3 scaling outputs or (``feedforward_modules``) inputs, or VeRA while its
    ``vera_B`` and ``vera_D`` are diagonal (PEFT's vectors)."""
    config = model.adapters_config[name]
    if config.method != "lora" or config.use_gating or (config.use_dora and (config.is_vera or
                                                                             config.dora_variant != "peft")):
        raise AdapterConfigError(f"{name!r} cannot be written as a PEFT folder: PEFT's files hold plain LoRA, its own "
                                 "DoRA (dora_variant='peft'), IA3 and VeRA adapters (no gating; AdapterHub's DoRA "
                                 "computes otherwise there)")
    if config.is_vera:
        return _save_vera(model, directory, name, overwrite)
    scale = config.composition_mode == "scale"
    root, task = _wrapped(model)  # and the adapter's own head of the checkpoint's kind as modules_to_save
    head = _head_layers(model) if root and name in model.heads and \
        model.heads[name].config == model.heads["default"].config else {}
    paths = {id(m): root + n for n, m in model.backbone.named_modules()}
    tensors, targets, feedforward, ranks, alphas, conv1d = {}, [], [], {}, {}, False
    for (stack, idx, key), layer in sorted(model._method("lora").layers.items()):
        if name not in layer.loras:
            continue
        module = paths[id(layer.linear)]
        targets.append(module)
        conv1d |= isinstance(layer.linear, Conv1D)
        lora = layer.loras[name]
        if scale:  # PEFT's IA3 has no alpha: the vector carries it; a feed-forward one is (1, in)
            if lora.on_input:
                tensors[f"{PREFIX}{module}.ia3_l"] = lora.lora_B.detach().reshape(1, -1) * lora.scaling
                feedforward.append(module)
            else:
                tensors[f"{PREFIX}{module}.ia3_l"] = lora.vector().detach()[:, None] * lora.scaling
            continue
        # on a fused projection PEFT's one pair is ours side by side: rank n r, B block-diagonal
        a, b = lora.lora_A.detach(), lora.up().detach()
        tensors[f"{PREFIX}{module}.lora_A.weight"] = a
        tensors[f"{PREFIX}{module}.lora_B.weight"] = b
        if lora.m is not None:
            tensors[f"{PREFIX}{module}.lora_magnitude_vector"] = lora.m.weight.detach().view(-1)
        ranks[module], alphas[module] = a.shape[0], _number(lora.scaling * a.shape[0])
    for module, i in head.items():
        for param, tensor in model.heads[name][i].named_parameters():
            tensors[f"{PREFIX}{module}.{param}"] = tensor.detach()
    peft = {"peft_type": "IA3" if scale else "LORA", "task_type": task, "inference_mode": True,
            "base_model_name_or_path": model.model_name, "target_modules": targets,
            "fan_in_fan_out": conv1d, "modules_to_save": sorted(head) or None}
    if scale:
        peft.update(feedforward_modules=feedforward, init_ia3_weights=True)
    else:
        peft.update(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
                    use_rslora=False, use_dora=config.use_dora, init_lora_weights=True,
                    rank_pattern={m: v for m, v in ranks.items() if v != config.r},
                    alpha_pattern={m: v for m, v in alphas.items() if v != config.alpha})
    with atomic_dir(directory, overwrite) as tmp:
        write_json(tmp / CONFIG, peft)
        write_weights(tmp / WEIGHTS[0], tensors)
    return Path(directory)


def _save_vera(model, directory, name: str, overwrite: bool) -> Path:
    """VeRA as PEFT's: ``lambda_b`` / ``lambda_d`` are the diagonals of ``vera_B`` / ``vera_D``
    (``lambda_b`` times our ``alpha / r``: PEFT does not scale), the shared matrices saved once."""
    config, shared = model.adapters_config[name], model._method("lora")._shared()[name]
    root, task = _wrapped(model)
    paths = {id(m): root + n for n, m in model.backbone.named_modules()}
    tensors, targets = {"base_model.vera_A": shared.lora_A.detach(), "base_model.vera_B": shared.lora_B.detach()}, []
    for (stack, idx, key), layer in sorted(model._method("lora").layers.items()):
        if name not in layer.loras:
            continue
        vera, module = layer.loras[name], paths[id(layer.linear)]
        for matrix in (vera.vera_B, vera.vera_D):
            if not torch.equal(matrix, torch.diag(torch.diagonal(matrix))):
                raise AdapterConfigError(f"{name!r} cannot be written as a PEFT folder: its vera_B / vera_D at {module} "
                                         "are no longer diagonal (AdapterHub's VeRA trains full matrices; PEFT's "
                                         "holds vectors)")
        tensors[f"{PREFIX}{module}.vera_lambda_b"] = torch.diagonal(vera.vera_B).detach() * vera.scaling
        tensors[f"{PREFIX}{module}.vera_lambda_d"] = torch.diagonal(vera.vera_D).detach()
        targets.append(module)
    peft = {"peft_type": "VERA", "task_type": task, "inference_mode": True, "base_model_name_or_path": model.model_name,
            "target_modules": targets, "r": config.r, "d_initial": config.vera_d, "vera_dropout": config.dropout,
            "save_projection": True, "projection_prng_key": 0, "bias": "none", "fan_in_fan_out": False,
            "modules_to_save": None}
    with atomic_dir(directory, overwrite) as tmp:
        write_json(tmp / CONFIG, peft)
        write_weights(tmp / WEIGHTS[0], {k: v.contiguous() for k, v in tensors.items()})
    return Path(directory)
