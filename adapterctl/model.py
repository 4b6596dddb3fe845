"""``AdapterModel``: a frozen-able transformers backbone plus named adapters, fusions and heads.

The backbone sits under its own prefix (``self.bert``, ``self.roberta``, ...) and heads under
``self.heads``, so the state-dict keys are AdapterHub's (``bert.encoder.layer.0.output.
adapters.<name>...``, ``heads.<name>.1.weight``) and its files load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from . import architectures, serialization
from . import composition as C
from .adapterdrop import AdapterDrop
from .config import BnConfig, load_config
from .errors import AdapterConfigError, AdapterNotFoundError
from .heads import PredictionHead, build_head
from .methods import invertible
from .methods.bottleneck import AdapterLayer, Bottleneck
from .methods.fusion import FusionConfig, load_fusion_config

BACKBONE_DROPOUT = ("all", "hidden", "none")  # see AdapterModel.train_adapter


@dataclass
class ForwardContext:
    """Model-level state every adapter layer reads during a forward pass."""

    active_setup: C.Block | None = None
    skip_layers: set = field(default_factory=set)  # AdapterDrop: layers whose adapters are skipped
    drop_below: int = 0  # AdapterDrop in training: this pass also skips the adapters of layers < drop_below
    batch_size: int | None = None  # rows before any Parallel replication

    def skips(self, layer_idx: int) -> bool:
        return layer_idx in self.skip_layers or layer_idx < self.drop_below


@dataclass
class AdapterModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: Any = None  # a tensor, (start, end) for QA, or a list with one entry per Parallel head
    hidden_states: torch.Tensor | None = None
    head: Any = None  # the head name(s) the logits come from


class AdapterModel(nn.Module):
    """A backbone with adapters. Build with ``from_pretrained`` or wrap a loaded model."""

    def __init__(self, backbone: PreTrainedModel, model_name: str | None = None):
        super().__init__()
        backbone = getattr(backbone, "base_model", backbone)
        self.family = architectures.family_of(backbone)
        self.base_model_prefix = backbone.base_model_prefix
        self.add_module(self.base_model_prefix, backbone)
        self.heads = nn.ModuleDict()
        self.config = backbone.config
        self.model_name = model_name or getattr(self.config, "_name_or_path", "") or ""
        self.adapters_config: dict[str, BnConfig] = {}
        self.fusions_config: dict[str, FusionConfig] = {}
        self.context = ForwardContext()
        self.adapter_drop: AdapterDrop | None = None
        self.active_head: str | list[str] | None = None
        self.backbone_dropout = "all"  # the frozen backbone's dropout in training; set by train_adapter
        self._layers: dict[tuple[int, str], AdapterLayer] = {}
        layers = self.backbone.get_submodule(self.family.layers)
        for layer in layers:
            layer.register_forward_pre_hook(self._repeat_rows_for_parallel, with_kwargs=True)
        # What ``backbone_dropout`` switches off, listed before any adapter module joins the
        # backbone: ``train()`` runs before every pass in a loop that evaluates as it goes.
        self._backbone_attention = [layer.get_submodule(self.family.attention) for layer in layers]
        self._backbone_dropouts = [m for m in backbone.modules() if isinstance(m, nn.Dropout)]

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "AdapterModel":
        """Load a transformers backbone (hub id or local folder) and wrap it."""
        return cls(AutoModel.from_pretrained(str(name_or_path), **kwargs), model_name=str(name_or_path))

    @property
    def backbone(self) -> PreTrainedModel:
        return getattr(self, self.base_model_prefix)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size  # DistilBERT's config maps hidden_size to dim

    def _repeat_rows_for_parallel(self, layer, args, kwargs):
        """Parallel replicates the hidden states inside some layer; the layers after it still get
        the encoder's B-row attention mask (and other per-row inputs): repeat them to N*B rows.
        (AdapterHub patches each model's attention code for this; a hook keeps ours unpatched.)"""
        name, pos = self.family.layer_input
        hidden = kwargs[name] if name in kwargs else args[pos]
        rows = self.context.batch_size
        if rows is None or hidden.shape[0] == rows:
            return None
        copies = hidden.shape[0] // rows

        def repeat(t):
            if torch.is_tensor(t) and t is not hidden and t.dim() >= 2 and t.shape[0] == rows:
                return t.repeat(copies, *[1] * (t.dim() - 1))
            return t

        return tuple(repeat(a) for a in args), {k: repeat(v) for k, v in kwargs.items()}

    # -- adapters -------------------------------------------------------------------------

    def _adapter_layer(self, idx: int, site_key: str) -> AdapterLayer:
        """The adapter layer at (layer, site), created and hooked in on first use."""
        if (idx, site_key) not in self._layers:
            layer = self.backbone.get_submodule(self.family.layers)[idx]
            adapter_layer = AdapterLayer(site_key, idx, self.context)
            adapter_layer.attach(layer, self.family.sites[site_key])
            self._layers[idx, site_key] = adapter_layer
        return self._layers[idx, site_key]

    def _num_layers(self) -> int:
        return len(self.backbone.get_submodule(self.family.layers))

    def add_adapter(self, name: str, config: Any = "pfeiffer", overwrite_ok: bool = False, set_active: bool = False,
                    **overrides) -> None:
        """Add a bottleneck adapter at every layer the config places it (``leave_out`` excepted).

        ``config``: a preset name, the string form ``pfeiffer[reduction_factor=8]``, a dict, a
        ``BnConfig`` or the path of an ``adapter_config.json``.
        """
        config = load_config(config, **overrides)
        if not name or not isinstance(name, str) or any(ch in name for ch in ",.[]|"):
            raise AdapterConfigError(f"invalid adapter name {name!r}; use letters, digits, '_' or '-'")
        if name in self.adapters_config:
            if not overwrite_ok:
                raise AdapterConfigError(
                    f"an adapter named {name!r} already exists; pick another name, delete_adapter({name!r}) "
                    "first, or pass overwrite_ok=True"
                )
            self.delete_adapter(name)
        if config.inv_adapter:  # MAD-X: the language adapter's coupling block at the embeddings
            embedding_size = getattr(self.config, "embedding_size", self.hidden_size)
            self._invertible_adapters()[name] = self._like_model(invertible.build(config, embedding_size))
        for idx in range(self._num_layers()):
            if idx in config.leave_out:
                continue
            for site_key in ("mh_adapter", "output_adapter"):
                if getattr(config, site_key):
                    size = config.bottleneck_size(self.hidden_size, idx)
                    module = Bottleneck(config, self.hidden_size, size)
                    self._adapter_layer(idx, site_key).adapters[name] = self._like_model(module)
        self.adapters_config[name] = config
        if set_active:
            self.set_active_adapters(name)

    def _like_model(self, module: nn.Module) -> nn.Module:
        """A new module on the backbone's device, in the model's train/eval mode."""
        return module.to(next(self.backbone.parameters()).device).train(self.training)

    def _invertible_adapters(self) -> invertible.InvertibleAdapters:
        """Created with the first invertible adapter, at AdapterHub's place (``<prefix>.invertible_adapters``)."""
        if not hasattr(self.backbone, "invertible_adapters"):
            modules = invertible.InvertibleAdapters(self.context)
            modules.attach(self.backbone.get_submodule(self.family.embeddings))
            self.backbone.add_module("invertible_adapters", modules)
        return self.backbone.invertible_adapters

    def has_adapter(self, name: str) -> bool:
        return name in self.adapters_config

    def delete_adapter(self, name: str) -> None:
        self._require_adapter(name)
        for layer in self._layers.values():
            if name in layer.adapters:
                del layer.adapters[name]
        if self.adapters_config[name].inv_adapter:
            del self._invertible_adapters()[name]
        del self.adapters_config[name]
        for fusion in [f for f in self.fusions_config if name in f.split(",")]:
            self.delete_fusion(fusion)
        if self.context.active_setup is not None and name in self.context.active_setup.flatten():
            self.context.active_setup = None

    def _require_adapter(self, name: str) -> None:
        if name not in self.adapters_config:
            known = ", ".join(self.adapters_config) or "none"
            raise AdapterNotFoundError(f"no adapter named {name!r} (adapters: {known}); add or load it first")

    def iter_adapter_modules(self, name: str):
        """``(layer index, site, module)`` for each module of an adapter; its invertible block
        first, as ``(None, "inv_adapter", block)``."""
        if self.adapters_config[name].inv_adapter:
            yield None, "inv_adapter", self._invertible_adapters()[name]
        for (idx, site), layer in sorted(self._layers.items()):
            if name in layer.adapters:
                yield idx, site, layer.adapters[name]

    # -- fusion ---------------------------------------------------------------------------

    def add_fusion(self, adapters, config: Any = "dynamic", name: str | None = None, overwrite_ok: bool = False,
                   set_active: bool = False) -> str:
        """Add an AdapterFusion layer over existing adapters; returns its name (``a,b,c``)."""
        fuse = adapters if isinstance(adapters, C.Fuse) else C.Fuse(*adapters, name=name)
        names = fuse.flatten()
        for n in names:
            self._require_adapter(n)
        sizes = {self.adapters_config[n].mh_adapter for n in names}
        if len(sizes) > 1:
            raise AdapterConfigError(
                f"cannot fuse {names}: they are placed at different sites (mh_adapter differs); "
                "fuse adapters of the same architecture"
            )
        config = load_fusion_config(config)
        if fuse.name in self.fusions_config and not overwrite_ok:
            raise AdapterConfigError(f"a fusion named {fuse.name!r} already exists; pass overwrite_ok=True to replace it")
        dropout = config.dropout_prob
        if dropout is None:
            dropout = getattr(self.config, "attention_probs_dropout_prob", getattr(self.config, "attention_dropout", 0.0))
        for layer in self._layers.values():
            if any(n in layer.adapters for n in names):
                layer.add_fusion(fuse.name, config, self.hidden_size, dropout)
                self._like_model(layer.adapter_fusion_layer[fuse.name])
        self.fusions_config[fuse.name] = config
        if set_active:
            self.set_active_adapters(fuse)
        return fuse.name

    def delete_fusion(self, name) -> None:
        name = name if isinstance(name, str) else C.Fuse(*name).name
        if name not in self.fusions_config:
            raise AdapterNotFoundError(f"no fusion named {name!r} (fusions: {', '.join(self.fusions_config) or 'none'})")
        for layer in self._layers.values():
            if name in layer.adapter_fusion_layer:
                del layer.adapter_fusion_layer[name]
        del self.fusions_config[name]

    def fusion_regularization_loss(self) -> torch.Tensor | None:
        """Sum of the value-matrix regularization of every trainable fusion layer."""
        losses = [
            loss
            for layer in self._layers.values()
            for fusion in layer.adapter_fusion_layer.values()
            if fusion.config.value and fusion.value.weight.requires_grad
            for loss in [fusion.regularization_loss()]
            if loss is not None
        ]
        return torch.stack(losses).sum() if losses else None

    # -- heads ----------------------------------------------------------------------------

    def add_head(self, name: str, head_type: str = "classification", overwrite_ok: bool = False,
                 set_active: bool = True, **config) -> PredictionHead:
        """Add a prediction head: classification, regression, multilabel_classification, tagging,
        multiple_choice or question_answering. ``id2label`` names the labels."""
        if name in self.heads and not overwrite_ok:
            raise AdapterConfigError(f"a head named {name!r} already exists; pass overwrite_ok=True to replace it")
        dropout = getattr(self.config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(self.config, "hidden_dropout_prob", getattr(self.config, "dropout", 0.0))
        head = build_head(name, head_type, self.hidden_size, dropout, **config)
        self.heads[name] = self._like_model(head)
        if set_active:
            self.active_head = name
        return head

    def add_classification_head(self, name: str, num_labels: int = 2, **config) -> PredictionHead:
        return self.add_head(name, "classification", num_labels=num_labels, **config)

    def delete_head(self, name: str) -> None:
        if name not in self.heads:
            raise AdapterNotFoundError(f"no head named {name!r} (heads: {', '.join(self.heads) or 'none'})")
        del self.heads[name]
        if self.active_head == name:
            self.active_head = None

    # -- activation and training ----------------------------------------------------------

    def set_active_adapters(self, setup, skip_layers=None) -> None:
        """Activate a setup: a name, a list (stack), a nested list (fusion) or a block; ``None``
        deactivates. ``skip_layers`` (AdapterDrop) lists layers whose adapters are skipped.
        The head named like the setup's last adapter (or each Parallel child's) becomes active."""
        block = C.parse_setup(setup)
        if block is not None:
            for name in block.flatten():
                self._require_adapter(name)
            self._check_fusions(block)
            head = _heads_of(block)
            if isinstance(head, list) and all(h in self.heads for h in head):
                self.active_head = head
            elif isinstance(head, str) and head in self.heads:
                self.active_head = head
        self.context.active_setup = block
        if skip_layers is not None:
            self.context.skip_layers = set(skip_layers)

    def set_adapter_drop(self, max_layer: int | None, p: float = 1.0) -> None:
        """Robust AdapterDrop in training (see ``adapterdrop.AdapterDrop``); ``None`` turns it off."""
        if max_layer is not None and max_layer > self._num_layers():
            raise AdapterConfigError(
                f"adapter_drop.max_layer={max_layer}, but the model has {self._num_layers()} layers; use at most that"
            )
        self.adapter_drop = AdapterDrop(max_layer, p) if max_layer is not None else None

    def _check_fusions(self, block) -> None:
        if isinstance(block, C.Fuse) and block.name not in self.fusions_config:
            raise AdapterNotFoundError(
                f"no fusion layer {block.name!r}; add it first with add_fusion({block.flatten()})"
            )
        for child in block.children:
            if isinstance(child, C.Block):
                self._check_fusions(child)

    @property
    def active_setup(self) -> C.Block | None:
        return self.context.active_setup

    def freeze_model(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) every weight; an unfrozen backbone trains with its own dropout."""
        for p in self.parameters():
            p.requires_grad = not freeze
        if not freeze:
            self.backbone_dropout = "all"

    def train_adapter(self, setup, train_head: bool = True, backbone_dropout: str = "none") -> None:
        """Freeze everything but the named adapter(s) and their head(s), activate them, and
        switch to training mode.

        ``backbone_dropout``: what of the frozen backbone's own dropout stays on in training.
        ``"none"`` (default) runs the frozen backbone without dropout: a step costs about 30%
        less (no random masks, and attention runs its fused kernel) and accuracy was as good or
        better on four task/adapter pairs (bench/backbone_dropout.py). ``"all"`` keeps it as the
        backbone's config says (AdapterHub's and PEFT's behaviour); ``"hidden"`` keeps hidden-state
        dropout and turns attention-probability dropout off. Adapter and head dropout are kept.
        """
        self._freeze_all_but(setup, self._adapter_modules, train_head, backbone_dropout)

    def train_fusion(self, setup, train_head: bool = True, backbone_dropout: str = "none") -> None:
        """Freeze everything but the fusion layer(s) of the setup and the head
        (``backbone_dropout`` as in ``train_adapter``)."""
        self._freeze_all_but(setup, self._fusion_modules, train_head, backbone_dropout)

    def _freeze_all_but(self, setup, trainable, train_head: bool, backbone_dropout: str) -> None:
        if backbone_dropout not in BACKBONE_DROPOUT:
            raise AdapterConfigError(
                f"backbone_dropout={backbone_dropout!r} is not one of {', '.join(BACKBONE_DROPOUT)}"
            )
        self.set_active_adapters(setup)
        modules = trainable(self.context.active_setup)
        self.freeze_model(True)
        for module in modules:
            module.requires_grad_(True)
        if train_head:
            self._unfreeze_heads()
        self.backbone_dropout = backbone_dropout
        self.train()

    def _adapter_modules(self, block) -> list[nn.Module]:
        return [module for name in block.flatten() for _, _, module in self.iter_adapter_modules(name)]

    def _fusion_modules(self, block) -> list[nn.Module]:
        fusions = _fusions_in(block)
        if not fusions:
            raise AdapterConfigError(f"{block!r} has no Fuse block; train_fusion needs one (e.g. [['a', 'b', 'c']])")
        return [layer.adapter_fusion_layer[name] for layer in self._layers.values() for name in fusions
                if name in layer.adapter_fusion_layer]

    def train(self, mode: bool = True) -> "AdapterModel":
        """``nn.Module.train``, then the frozen backbone's dropout as ``backbone_dropout`` says."""
        super().train(mode)
        if mode and self.backbone_dropout != "all":
            for attention in self._backbone_attention:  # it reads its own flag for probability dropout
                attention.training = False
            if self.backbone_dropout == "none":
                for dropout in self._backbone_dropouts:
                    dropout.training = False
        return self

    def _unfreeze_heads(self) -> None:
        heads = self.active_head if isinstance(self.active_head, list) else [self.active_head]
        for h in heads:
            if h is not None and h in self.heads:
                self.heads[h].requires_grad_(True)

    # -- forward --------------------------------------------------------------------------

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, head=None,
                inputs_embeds=None, start_positions=None, end_positions=None, **kwargs) -> AdapterModelOutput:
        rows = input_ids if input_ids is not None else inputs_embeds
        multiple_choice = rows is not None and rows.dim() == (3 if input_ids is not None else 4)
        if multiple_choice:  # (batch, choices, seq) -> (batch * choices, seq)
            flat = lambda t: t.reshape(-1, t.shape[-1]) if t is not None else None  # noqa: E731
            input_ids, attention_mask, token_type_ids = flat(input_ids), flat(attention_mask), flat(token_type_ids)
            rows = input_ids
        self.context.batch_size = rows.shape[0]
        self.context.drop_below = self.adapter_drop.sample() if self.training and self.adapter_drop else 0
        backbone_kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        if token_type_ids is not None:
            backbone_kwargs["token_type_ids"] = token_type_ids
        outputs = self.backbone(**backbone_kwargs)
        hidden = outputs[0]
        pooled = getattr(outputs, "pooler_output", None)
        head = head if head is not None else self.active_head
        if head is None:
            return AdapterModelOutput(hidden_states=hidden)
        label_kw = dict(labels=labels, start_positions=start_positions, end_positions=end_positions)
        if isinstance(head, list):  # Parallel: each head on its copy of the batch
            b = self.context.batch_size
            if hidden.shape[0] == b:
                chunks = [(hidden, pooled)] * len(head)
            else:
                chunks = [
                    (hidden[i * b:(i + 1) * b], pooled[i * b:(i + 1) * b] if pooled is not None else None)
                    for i in range(len(head))
                ]
            outs = [self._head(h, hs, ps, attention_mask, label_kw) for h, (hs, ps) in zip(head, chunks)]
            losses = [o.loss for o in outs if o.loss is not None]
            return AdapterModelOutput(
                loss=torch.stack(losses).sum() if losses else None, logits=[o.logits for o in outs],
                hidden_states=hidden, head=head,
            )
        out = self._head(head, hidden, pooled, attention_mask, label_kw)
        return AdapterModelOutput(loss=out.loss, logits=out.logits, hidden_states=hidden, head=head)

    def _head(self, name, hidden, pooled, attention_mask, label_kw):
        if name not in self.heads:
            raise AdapterNotFoundError(f"no head named {name!r} (heads: {', '.join(self.heads) or 'none'})")
        return self.heads[name](hidden, pooled, attention_mask=attention_mask, **label_kw)

    # -- save and load --------------------------------------------------------------------

    def save_adapter(self, directory, name: str, with_head: bool = True, overwrite: bool = False,
                     metadata: dict | None = None) -> Path:
        """Write ``adapter_config.json`` + ``adapter.safetensors`` (and the head of the same
        name) to ``directory``, atomically; an existing folder is kept unless ``overwrite``."""
        self._require_adapter(name)
        return serialization.save_adapter(self, Path(directory), name, with_head=with_head, overwrite=overwrite,
                                          metadata=metadata)

    def load_adapter(self, source, load_as: str | None = None, with_head: bool = True, set_active: bool = False,
                     labels=None, overwrite_ok: bool = False) -> str:
        """Load an adapter folder (ours or AdapterHub's) or a Hub identifier; returns its name.

        ``labels``: the label names the task expects; a head whose labels differ is refused.
        """
        name = serialization.load_adapter(self, source, load_as=load_as, with_head=with_head, labels=labels,
                                          overwrite_ok=overwrite_ok)
        if set_active:
            self.set_active_adapters(name)
        return name

    def save_fusion(self, directory, name, with_head: bool = True, overwrite: bool = False) -> Path:
        name = name if isinstance(name, str) else C.Fuse(*name).name
        if name not in self.fusions_config:
            raise AdapterNotFoundError(f"no fusion named {name!r} (fusions: {', '.join(self.fusions_config) or 'none'})")
        return serialization.save_fusion(self, Path(directory), name, with_head=with_head, overwrite=overwrite)

    def load_fusion(self, directory, load_as: str | None = None, with_head: bool = True, set_active: bool = False,
                    overwrite_ok: bool = False) -> str:
        name = serialization.load_fusion(self, Path(directory), load_as=load_as, with_head=with_head,
                                         overwrite_ok=overwrite_ok)
        if set_active:
            self.set_active_adapters(C.Fuse(*name.split(",")))
        return name

    def save_adapter_setup(self, directory, setup=None, overwrite: bool = False) -> Path:
        """Save a whole setup (the active one by default) as AdapterHub does: ``adapter_setup.json``
        plus one folder per adapter and per fusion, heads beside them."""
        block = C.parse_setup(setup) if setup is not None else self.context.active_setup
        if block is None:
            raise AdapterConfigError("no adapter setup to save; pass one or activate one with set_active_adapters")
        for name in block.flatten():
            self._require_adapter(name)
        self._check_fusions(block)
        head_setup = _heads_of(block) if setup is not None else self.active_head
        return serialization.save_setup(self, Path(directory), block, _fusions_in(block), head_setup, overwrite)

    def load_adapter_setup(self, directory, set_active: bool = False):
        """Load what ``save_adapter_setup`` wrote; returns ``(setup, head_setup)``."""
        block, head_setup = serialization.read_setup(Path(directory))
        C.validate(block)
        for name in block.flatten():
            self.load_adapter(Path(directory) / name)
        for name in _fusions_in(block):
            self.load_fusion(Path(directory) / name)
        if set_active:
            self.set_active_adapters(block)
        return block, head_setup

    # -- reporting ------------------------------------------------------------------------

    def adapter_summary(self, as_dict: bool = False):
        """Name, method, parameters, % of the backbone, active and trainable, per adapter and fusion."""
        backbone_params = sum(p.numel() for n, p in self.backbone.named_parameters() if _is_backbone_param(n))
        active = set(self.context.active_setup.flatten()) if self.context.active_setup else set()
        active_fusions = set(_fusions_in(self.context.active_setup)) if self.context.active_setup else set()
        rows = []
        for name, config in self.adapters_config.items():
            params = [p for _, _, m in self.iter_adapter_modules(name) for p in m.parameters()]
            rows.append(_summary_row(name, method_name(config), params, backbone_params, name in active))
        for name in self.fusions_config:
            params = [p for layer in self._layers.values() if name in layer.adapter_fusion_layer
                      for p in layer.adapter_fusion_layer[name].parameters()]
            rows.append(_summary_row(name, "fusion", params, backbone_params, name in active_fusions))
        for name, head in self.heads.items():
            rows.append(_summary_row(f"head:{name}", head.config["head_type"], list(head.parameters()),
                                     backbone_params, name == self.active_head or name in (self.active_head or [])))
        if as_dict:
            return rows
        header = f"{'name':<24}{'method':<18}{'params':>12}{'% backbone':>12}{'active':>8}{'train':>7}"
        lines = [header, "-" * len(header)]
        for r in rows:
            lines.append(f"{r['name']:<24}{r['method']:<18}{r['params']:>12,}{r['percent']:>11.3f}%"
                         f"{'yes' if r['active'] else 'no':>8}{'yes' if r['trainable'] else 'no':>7}")
        lines.append(f"{'backbone':<24}{self.config.model_type:<18}{backbone_params:>12,}{100:>11.3f}%")
        return "\n".join(lines)


def _is_backbone_param(name: str) -> bool:
    return ".adapters." not in name and ".adapter_fusion_layer." not in name and "_adapters." not in name


def _summary_row(name, method, params, backbone_params, active) -> dict:
    n = sum(p.numel() for p in params)
    return {"name": name, "method": method, "params": n, "percent": 100.0 * n / backbone_params,
            "active": bool(active), "trainable": bool(params) and all(p.requires_grad for p in params)}


def method_name(config: BnConfig) -> str:
    """The preset a config equals (pfeiffer, houlsby, parallel, ...), else ``bottleneck``."""
    from .config import PRESETS

    d = config.replace(init_weights="identity").to_dict()
    for preset in ("pfeiffer", "houlsby", "parallel", "scaled_parallel", "pfeiffer+inv", "houlsby+inv"):
        base = BnConfig(**PRESETS[preset])
        if base.replace(init_weights="identity", reduction_factor=config.reduction_factor).to_dict() == d:
            return preset
    return "bottleneck"


def _heads_of(block: C.Block):
    """AdapterHub's rule: the head named like the last adapter; one per child for Parallel."""
    final = block.children[-1] if isinstance(block, C.Stack) else block
    if isinstance(final, str):
        return final
    if isinstance(final, C.Parallel):
        return [c if isinstance(c, str) else c.last() for c in final.children]
    if isinstance(final, C.Fuse):
        return final.name
    return None


def _fusions_in(block) -> list[str]:
    if block is None or isinstance(block, str):
        return []
    found = [block.name] if isinstance(block, C.Fuse) else []
    for child in block.children:
        found += _fusions_in(child)
    return found
