"""``AdapterModel``: a transformers backbone plus named adapters (of any registered method),
fusions and heads.

The backbone sits under its own prefix (``self.bert``, ``self.model``, ...) and heads under
``self.heads``, so the state-dict keys are AdapterHub's (``bert.encoder.layer.0.output.
adapters.<name>...``, ``heads.<name>.1.weight``) and its files load without renaming. This
class is a facade: methods place and run their modules (``methods/``), the family spec says
where (``families/``), per-call setups live in ``context.py``, composition in ``composer.py``,
training policy in ``training.py``, saving and loading in ``saving.py`` (file formats in
``formats/``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from transformers import GenerationConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING
from transformers.utils import ModelOutput

from ..errors import AdapterConfigError, AdapterNotFoundError
from ..families import base_model_of, family_of
from ..heads import PredictionHead, build_head
from ..heads.language_modeling import decoder_inputs
from ..methods import invertible
from ..methods.adapterdrop import AdapterDrop
from ..methods.averaging import average_adapter
from ..methods.base import Method
from ..methods.fusion.config import FusionConfig, load_fusion_config
from ..methods.fusion.layer import recording_attentions
from . import composition as C
from . import registry
from .backbone import load_pretrained
from .composer import check_supported
from .config import AdapterConfig, load_config
from .context import NO_ADAPTER, AdapterContext, CallSetup, Rows
from .saving import SaveLoadMixin
from .summary import format_summary, summary_rows
from .training import TrainingPolicy


@dataclass
class AdapterModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: Any = None  # a tensor, (start, end) for QA, or a list with one entry per Parallel head
    hidden_states: torch.Tensor | None = None
    head: Any = None  # the head name(s) the logits come from


class AdapterModel(SaveLoadMixin, nn.Module):
    """A backbone with adapters. Build with ``from_pretrained`` or wrap a loaded model; a model
    with a task head (``*ForSequenceClassification``, ``*ForCausalLM``, ...) keeps it as the
    active head named ``default``, as AdapterHub converts static heads."""

    def __init__(self, model: PreTrainedModel, model_name: str | None = None):
        super().__init__()
        backbone = base_model_of(model)
        self.family = family_of(backbone)
        self.base_model_prefix = backbone.base_model_prefix
        self.add_module(self.base_model_prefix, backbone)
        self.heads = nn.ModuleDict()
        self.config = backbone.config
        self.model_name = model_name or getattr(self.config, "_name_or_path", "") or ""
        self.adapters_config: dict[str, AdapterConfig] = {}
        self.fusions_config: dict[str, FusionConfig] = {}
        self.context = AdapterContext()
        self._methods: dict[str, Method] = {}
        self._lm_shells: dict[str, PreTrainedModel] = {}  # generate(): *ForCausalLM around a causal_lm head
        self._generation_config = getattr(model, "generation_config", None) if model is not backbone else None
        attention = [layer.get_submodule(spec.attention) for _, spec, _, layer in self._layers()]
        self._policy = TrainingPolicy(attention, backbone)
        # An encoder-decoder's stacks also run on their own (generate() encodes once, T5's
        # *ForConditionalGeneration calls its stacks directly): each begins a pass too, nested.
        # The module that begins a pass -> the stacks whose layers that pass runs.
        self._pass_stacks = {backbone: frozenset(self.family.stacks)}
        if self.family.kind == "encoder-decoder":
            self._pass_stacks = {backbone: frozenset()}
            for name, spec in self.family.stacks.items():
                owner = backbone.get_submodule(spec.path.rpartition(".")[0])
                self._pass_stacks[owner] = self._pass_stacks.get(owner, frozenset()) | {name}
        for module in self._pass_stacks:
            module.register_forward_pre_hook(self._begin_pass, with_kwargs=True)
            module.register_forward_hook(self._end_pass, always_call=True)
        for _, spec, idx, layer in self._layers():
            layer.register_forward_pre_hook(self._parallel_rows_hook(idx, spec.layer_input), with_kwargs=True)
        if model is not backbone:
            self._keep_static_head(model)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "AdapterModel":
        """Load a transformers checkpoint (a Hub id, a local folder or ``pkg://<package>/<folder>``)
        and wrap it, with its head if it has one; transformers' keyword arguments pass through."""
        return cls(load_pretrained(name_or_path, **kwargs), model_name=str(name_or_path))

    @property
    def backbone(self) -> PreTrainedModel:
        return getattr(self, self.base_model_prefix)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size  # DistilBERT's config maps hidden_size to dim

    def _layers(self):
        """``(stack name, stack spec, layer index, layer)``; indices run on across stacks."""
        idx = 0
        for name, spec in self.family.stacks.items():
            for layer in self.backbone.get_submodule(spec.path):
                yield name, spec, idx, layer
                idx += 1

    def iter_layers(self):
        """``(stack name, layer index, layer)`` for the methods that place modules in layers."""
        return ((name, idx, layer) for name, _, idx, layer in self._layers())

    def like_model(self, module: nn.Module, dtype: str | None = None) -> nn.Module:
        """A new module on the backbone's device, in the model's train/eval mode, its floating
        tensors in ``dtype`` (a config's ``dtype`` field) or else the backbone's: a bfloat16 LLM
        takes bfloat16 adapters and heads (AdapterHub's stay float32 and fail on it). A module
        that ``keeps_dtype`` manages its own."""
        if not getattr(module, "keeps_dtype", False):
            module = module.to(dtype=getattr(torch, dtype) if dtype else self.backbone.dtype)
        return module.to(next(self.backbone.parameters()).device).train(self.training)

    # -- the pass in flight -----------------------------------------------------------------

    def _begin_pass(self, module, args, kwargs):
        rows = next((t for t in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args[:1]) if torch.is_tensor(t)),
                    None)
        self.context.begin(rows.shape[0] if rows is not None else None, self.training)
        for method in self._methods.values():
            method.begin_pass(self.context.state, self._pass_stacks[module], kwargs)
        return self._parallel_decoder_inputs(args, kwargs)

    def _parallel_decoder_inputs(self, args, kwargs):
        """An encoder-decoder's decoder stack under a Parallel setup: the encoder replicated its
        batch (N copies of B rows), so the decoder's inputs and masks are replicated to match and
        copy i of the decoder attends to copy i of the encoder (AdapterHub replicates them the
        same way); every output then has N*B rows."""
        state, encoded = self.context.state, kwargs.get("encoder_hidden_states")
        rows = state.batch_size
        if (state.setup is None or rows is None or not torch.is_tensor(encoded) or encoded.shape[0] == rows
                or encoded.shape[0] % rows):
            return None
        copies = encoded.shape[0] // rows
        return C.repeat_rows(args, rows, copies), {k: C.repeat_rows(v, rows, copies) for k, v in kwargs.items()}

    def _end_pass(self, backbone, args, output):
        self.context.end()

    def _parallel_rows_hook(self, idx: int, layer_input: tuple[str, int]):
        """A layer pre-hook for Parallel setups. Methods that act inside a layer (LoRA in
        attention, bottleneck adapters at a pre-LN site) need the batch replicated at the layer's
        entry; after a layer replicated it, the next ones get the B-row attention mask (and
        other per-row inputs) repeated to N*B rows. (AdapterHub patches each model's attention
        code for this; a hook keeps ours unpatched.)"""

        def hook(layer, args, kwargs):
            state = self.context.state
            if state.setup is None or state.batch_size is None:
                return None
            channels = state.setup.parallel_channels
            name, pos = layer_input
            hidden = kwargs[name] if name in kwargs else args[pos]
            rows = state.batch_size
            if channels == 1 or (hidden.shape[0] == rows and not self._replicates_at_entry(idx, state)):
                return None
            copies = channels if hidden.shape[0] == rows else hidden.shape[0] // rows
            return C.repeat_rows(args, rows, copies), {k: C.repeat_rows(v, rows, copies) for k, v in kwargs.items()}

        return hook

    def _replicates_at_entry(self, idx: int, state) -> bool:
        return any(layer.layer_idx == idx and not layer.replicates_locally and layer.active_setup(state) is not None
                   for method in self._methods.values() for layer in method.layers.values())

    # -- adapters -------------------------------------------------------------------------

    def _method(self, name: str) -> Method:
        if name not in self._methods:
            self._methods[name] = registry.methods()[name].method_class(self)
        return self._methods[name]

    def _method_of(self, adapter: str) -> Method:
        return self._method(registry.method_for(self.adapters_config[adapter]).name)

    def add_adapter(self, name: str, config: Any = "pfeiffer", overwrite_ok: bool = False, set_active: bool = False,
                    **overrides) -> None:
        """Add an adapter of any registered method at every place its config asks for.

        ``config``: a preset name (``pfeiffer``, ``houlsby``, ``parallel``, ...), the string
        form ``pfeiffer[reduction_factor=8]``, a dict, a config object or the path of an
        ``adapter_config.json``; ``overrides`` replace its fields.
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
        method = self._method(registry.method_for(config).name)
        try:
            method.add(name, config)
        except BaseException:
            method.delete(name)
            raise
        self.adapters_config[name] = config
        if set_active:
            self.set_active_adapters(name)

    def has_adapter(self, name: str) -> bool:
        return name in self.adapters_config

    def delete_adapter(self, name: str) -> None:
        self._require_adapter(name)
        self._method_of(name).delete(name)
        del self.adapters_config[name]
        for fusion in [f for f in self.fusions_config if name in f.split(",")]:
            self.delete_fusion(fusion)
        self._deactivate_setup_with(name)

    def _deactivate_setup_with(self, name: str) -> None:
        """A default setup that used the adapter or fusion ``name`` is switched off, and with it
        the head(s) it made active, which would otherwise run on outputs the setup no longer
        shapes. (AdapterHub leaves such a head active.)"""
        default = self.context.default
        setup = default.setup
        if setup is None or name not in setup.flatten() + C.fusions_in(setup):
            return
        derived = C.heads_of(setup)
        head = None if derived is not None and default.head == derived else default.head
        self.context.default = replace(default, setup=None, head=head)

    def _require_adapter(self, name: str) -> None:
        if name not in self.adapters_config:
            known = ", ".join(self.adapters_config) or "none"
            raise AdapterNotFoundError(f"no adapter named {name!r} (adapters: {known}); add or load it first")

    def adapter_modules(self, name: str) -> list[nn.Module]:
        """Every module of an adapter: what trains, counts and is saved."""
        self._require_adapter(name)
        return self._method_of(name).modules(name)

    def merge_adapter(self, name: str) -> None:
        """Fold an adapter into the backbone's weights (LoRA, IA3): the same outputs with no
        adapter work left in the forward pass. ``reset_adapter`` undoes it."""
        self._require_adapter(name)
        method = self._method_of(name)
        if not method.can_merge:
            can = [n for n, spec in registry.methods().items() if spec.method_class.can_merge]
            raise AdapterConfigError(
                f"{name!r} is a {method.name} adapter, which cannot be merged into the backbone's weights; "
                f"methods that can: {', '.join(can)}"
            )
        method.merge(name)

    def eject_prefix_tuning(self, name: str) -> None:
        """Turn a trained prefix-tuning adapter's MLP into the flat prefix it computes: the same
        outputs, less to run and to save; its config becomes ``flat=True``."""
        self._require_adapter(name)
        method = self._method_of(name)
        if not hasattr(method, "eject"):
            raise AdapterConfigError(f"{name!r} is a {method.name} adapter; eject_prefix_tuning needs a prefix_tuning one")
        method.eject(name)

    def reset_adapter(self) -> None:
        """Undo ``merge_adapter``."""
        for method in self._methods.values():
            if method.can_merge:
                method.reset()

    average_adapter = average_adapter  # a new adapter from others' weights (methods/averaging.py)

    # -- fusion ---------------------------------------------------------------------------

    def add_fusion(self, adapters, config: Any = "dynamic", name: str | None = None, overwrite_ok: bool = False,
                   set_active: bool = False) -> str:
        """Add an AdapterFusion layer over existing bottleneck adapters; returns its name (``a,b,c``)."""
        fuse = adapters if isinstance(adapters, C.Fuse) else C.Fuse(*adapters, name=name)
        names = fuse.flatten()
        for n in names:
            self._require_adapter(n)
        check_supported(fuse, self._method_of)
        if len({self.adapters_config[n].mh_adapter for n in names}) > 1:
            raise AdapterConfigError(
                f"cannot fuse {names}: they are placed at different sites (mh_adapter differs); "
                "fuse adapters of the same architecture"
            )
        leave_out = {n: sorted(self.adapters_config[n].leave_out) for n in names}
        if len({tuple(v) for v in leave_out.values()}) > 1:
            raise AdapterConfigError(
                f"cannot fuse {names}: they leave out different layers (leave_out: "
                f"{', '.join(f'{n} {v}' for n, v in leave_out.items())}); fuse adapters placed in the same layers"
            )
        config = load_fusion_config(config)
        if fuse.name in self.fusions_config and not overwrite_ok:
            raise AdapterConfigError(f"a fusion named {fuse.name!r} already exists; pass overwrite_ok=True to replace it")
        dropout = config.dropout_prob
        if dropout is None:
            dropout = getattr(self.config, "attention_probs_dropout_prob", getattr(self.config, "attention_dropout", 0.0))
        self._method("bottleneck").add_fusion(fuse.name, names, config, dropout)
        self.fusions_config[fuse.name] = config
        if set_active:
            self.set_active_adapters(fuse)
        return fuse.name

    def delete_fusion(self, name) -> None:
        name = self._require_fusion(name)
        self._method("bottleneck").delete_fusion(name)
        del self.fusions_config[name]
        self._deactivate_setup_with(name)

    def _require_fusion(self, name) -> str:
        name = name if isinstance(name, str) else C.Fuse(*name).name
        if name not in self.fusions_config:
            raise AdapterNotFoundError(f"no fusion named {name!r} (fusions: {', '.join(self.fusions_config) or 'none'})")
        return name

    def fusion_modules(self, name: str) -> list[nn.Module]:
        return self._method("bottleneck").fusion_modules(self._require_fusion(name))

    def fusion_regularization_loss(self) -> torch.Tensor | None:
        """Sum of the value-matrix regularization of every trainable fusion layer."""
        losses = [
            loss
            for name in self.fusions_config
            for fusion in self.fusion_modules(name)
            if fusion.config.value and fusion.value.weight.requires_grad
            for loss in [fusion.regularization_loss()]
            if loss is not None
        ]
        return torch.stack(losses).sum() if losses else None

    def active_fusions(self) -> list[str]:
        return C.fusions_in(self.active_setup)

    def fusion_attentions(self, **batch) -> dict[str, dict[int, dict[str, torch.Tensor]]]:
        """Run ``self(**batch)`` once and return each fusion's attention over its adapters:
        ``{fusion: {layer index: {site: probs (B, T, N)}}}``, N in the ``Fuse`` block's order,
        the site ``mh_adapter`` or ``output_adapter`` (AdapterHub's
        ``output_adapter_fusion_attentions=True``). Grad mode is the caller's."""
        with recording_attentions() as record:
            self(**batch)
        out: dict = {}
        for (_, idx, site), layer in sorted(self._method("bottleneck").layers.items()):
            for name, fusion in layer.adapter_fusion_layer.items():
                if fusion in record:
                    out.setdefault(name, {}).setdefault(idx, {})[site] = record[fusion]
        return out

    # -- heads ----------------------------------------------------------------------------

    def add_head(self, name: str, head_type: str = "classification", overwrite_ok: bool = False,
                 set_active: bool = True, **config) -> PredictionHead:
        """Add a prediction head: classification, regression, multilabel_classification, tagging,
        multiple_choice, question_answering or causal_lm. ``id2label`` names the labels. On a
        decoder, sequence-level heads read the last non-padding token."""
        if name in self.heads and not overwrite_ok:
            raise AdapterConfigError(f"a head named {name!r} already exists; pass overwrite_ok=True to replace it")
        dropout = getattr(self.config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(self.config, "hidden_dropout_prob", getattr(self.config, "dropout", 0.0))
        head = build_head(name, head_type, self.config, dropout, pool_last=self.family.kind == "decoder", **config)
        if hasattr(head, "tie") and getattr(self.config, "tie_word_embeddings", False):
            head.tie(self.backbone.get_input_embeddings())  # an LM head's last layer shares the input embeddings
        if hasattr(head, "inverse"):  # an LM head: the active invertible block's inverse before its projection
            head.inverse = partial(invertible.inverse, self.backbone, self.family)
        self.heads[name] = self.like_model(head)
        if set_active:
            self.active_head = name
        return head

    def add_classification_head(self, name: str, num_labels: int = 2, **config) -> PredictionHead:
        return self.add_head(name, "classification", num_labels=num_labels, **config)

    def delete_head(self, name: str) -> None:
        if name not in self.heads:
            raise AdapterNotFoundError(f"no head named {name!r} (heads: {', '.join(self.heads) or 'none'})")
        del self.heads[name]
        if name in C.head_names(self.active_head):
            self.active_head = None

    def _keep_static_head(self, model: PreTrainedModel) -> None:
        """A checkpoint's task head becomes our head ``default`` (its weights shared, not copied)."""
        spec = self.family.static_head(type(model).__name__)
        if spec is None:
            return
        config = dict(spec.config)
        head_type = config.pop("head_type")
        if head_type == "classification" and getattr(self.config, "problem_type", None) == "multi_label_classification":
            head_type = "multilabel_classification"
        if head_type in ("classification", "multilabel_classification", "tagging"):
            config.update(num_labels=self.config.num_labels, id2label=dict(self.config.id2label))
        head = self.add_head("default", head_type, **config)
        for ours, theirs in zip(head, spec.layers):
            if theirs is not None:
                source = model.get_submodule(theirs)
                ours.weight = source.weight
                if source.bias is not None:
                    ours.bias = source.bias

    @property
    def active_head(self):
        return self.context.default.head

    @active_head.setter
    def active_head(self, head) -> None:
        self.context.default = replace(self.context.default, head=head)

    # -- activation and training ----------------------------------------------------------

    def _checked_setup(self, setup) -> C.Block | None:
        block = C.parse_setup(setup)
        if block is not None:
            for name in block.flatten():
                self._require_adapter(name)
            self._check_fusions(block)
            check_supported(block, self._method_of)
        return block

    def set_active_adapters(self, setup, skip_layers=None) -> None:
        """The default setup: a name, a list (stack), a nested list (fusion) or a block; ``None``
        deactivates. ``skip_layers`` (AdapterDrop) lists layers whose adapters are skipped.
        The head named like the setup's last adapter (or each Parallel child's) becomes active."""
        block = self._checked_setup(setup)
        head = self._heads_for(block)
        default = self.context.default
        self.context.default = CallSetup(
            block, head if head is not None else default.head,
            frozenset(skip_layers) if skip_layers is not None else default.skip_layers,
        )

    @contextlib.contextmanager
    def adapter_setup(self, setup, head=None, skip_layers=()):
        """Run the calls inside the block with this setup (and head) instead of the default, in
        this thread only: ``with model.adapter_setup(Stack("a", "b"), head="b"): model(**batch)``.
        ``head=None``: the head named like the setup's last adapter, else the default head."""
        block = self._checked_setup(setup)
        if head is None:
            head = self._heads_for(block)
        call = CallSetup(block, head if head is not None else self.active_head, frozenset(skip_layers))
        with self.context.using(call):
            yield

    def _heads_for(self, block):
        """AdapterHub's rule (the head named like the last adapter; one per Parallel child), if
        those heads exist."""
        head = C.heads_of(block) if block is not None else None
        return head if head is not None and all(h in self.heads for h in C.head_names(head)) else None

    def set_adapter_drop(self, max_layer: int | None, p: float = 1.0) -> None:
        """Robust AdapterDrop in training (see ``methods/adapterdrop.py``); ``None`` turns it off."""
        layers = sum(1 for _ in self._layers())
        if max_layer is not None and max_layer > layers:
            raise AdapterConfigError(f"adapter_drop.max_layer={max_layer}, but the model has {layers} layers; use at most that")
        self.context.adapter_drop = AdapterDrop(max_layer, p) if max_layer is not None else None

    @property
    def adapter_drop(self) -> AdapterDrop | None:
        return self.context.adapter_drop

    def _check_fusions(self, block) -> None:
        for name in C.fusions_in(block):
            if name not in self.fusions_config:
                fuse = next(b for b in C.blocks_in(block) if isinstance(b, C.Fuse) and b.name == name)
                raise AdapterNotFoundError(f"no fusion layer {name!r}; add it first with add_fusion({fuse.flatten()})")

    @property
    def active_setup(self) -> C.Block | None:
        return self.context.default.setup

    def freeze_model(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) every weight; an unfrozen backbone trains with its own dropout."""
        if freeze:
            self.requires_grad_(False)
        else:
            self._policy.unfreeze(self)

    def train_adapter(self, setup, train_head: bool = True, backbone_dropout: str = "none") -> None:
        """Freeze everything but the named adapter(s) and their head(s), activate them, and switch
        to training mode. ``backbone_dropout`` (none, hidden, all): see ``core/training.py``."""
        block = self._activate_for_training(setup)
        self._train_only([m for name in block.flatten() for m in self.adapter_modules(name)], train_head,
                         backbone_dropout)

    def train_fusion(self, setup, train_head: bool = True, backbone_dropout: str = "none") -> None:
        """Freeze everything but the fusion layer(s) of the setup and the head
        (``backbone_dropout`` as in ``train_adapter``)."""
        block = self._activate_for_training(setup)
        fusions = C.fusions_in(block)
        if not fusions:
            raise AdapterConfigError(f"{block!r} has no Fuse block; train_fusion needs one (e.g. [['a', 'b', 'c']])")
        self._train_only([m for name in fusions for m in self.fusion_modules(name)], train_head, backbone_dropout)

    def _activate_for_training(self, setup) -> C.Block:
        self.set_active_adapters(setup)
        for method in self._methods.values():
            if method.merged():
                raise AdapterConfigError(
                    f"{method.name} adapters are merged into the weights ({', '.join(method.merged())}); "
                    "call reset_adapter() before training"
                )
        return self.active_setup

    def _train_only(self, modules: list[nn.Module], train_head: bool, backbone_dropout: str) -> None:
        if train_head:
            modules += [self.heads[h] for h in C.head_names(self.active_head) if h in self.heads]
        self._policy.freeze_all_but(self, modules, backbone_dropout)
        # A head tied to the input embeddings does not train them (AdapterHub's freeze_embeddings).
        self.backbone.get_input_embeddings().requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "AdapterModel":
        """``nn.Module.train``, then the frozen backbone's dropout as ``backbone_dropout`` says."""
        super().train(mode)
        self._policy.after_train(mode)
        return self

    @property
    def backbone_dropout(self) -> str:
        return self._policy.backbone_dropout

    # -- forward --------------------------------------------------------------------------

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, head=None,
                inputs_embeds=None, start_positions=None, end_positions=None, adapter_setup=None,
                adapter_names=None, **kwargs) -> AdapterModelOutput:
        """The backbone with the default setup (or ``adapter_setup``, for this call only), then
        the active head (or ``head``). ``adapter_names``: a mixed batch, one adapter per row
        (``_forward_rows``)."""
        if adapter_setup is not None and adapter_names is not None:
            raise AdapterConfigError("give adapter_setup (one setup for the batch) or adapter_names (one adapter per "
                                     "row), not both")
        if adapter_setup is not None:
            with self.adapter_setup(adapter_setup, head=head):
                return self.forward(input_ids, attention_mask, token_type_ids, labels, None, inputs_embeds,
                                    start_positions, end_positions, **kwargs)
        if adapter_names is not None:
            if labels is not None or start_positions is not None or end_positions is not None:
                raise AdapterConfigError("adapter_names (a mixed batch) is for inference; train on one setup per batch "
                                         "(adapter_setup=... or set_active_adapters)")
            return self._forward_rows(adapter_names, head, input_ids, attention_mask, token_type_ids, inputs_embeds,
                                      **kwargs)
        if (labels is not None and self.family.kind == "encoder-decoder" and kwargs.get("decoder_input_ids") is None
                and kwargs.get("decoder_inputs_embeds") is None):
            kwargs["decoder_input_ids"] = decoder_inputs(labels, self.config)  # teacher forcing, as transformers does
        rows, hidden, pooled, attention_mask = self._backbone_pass(input_ids, attention_mask, token_type_ids,
                                                                   inputs_embeds, **kwargs)
        head = head if head is not None else self.context.call.head
        if head is None:
            return AdapterModelOutput(hidden_states=hidden)
        label_kw = dict(labels=labels, start_positions=start_positions, end_positions=end_positions)
        if isinstance(head, C.BatchSplit):
            return self._batch_split_heads(head, hidden, pooled, attention_mask, label_kw)
        if isinstance(head, list):  # Parallel: each head on its copy of the batch
            b = rows.shape[0]
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

    def _batch_split_heads(self, heads: C.BatchSplit, hidden, pooled, attention_mask, label_kw) -> AdapterModelOutput:
        """AdapterHub's BatchSplit head setup: head i on rows ``batch_sizes[i]`` (and their
        labels). The logits are one tensor over all rows when the heads' shapes agree, else a
        list with one entry per head (AdapterHub's ``head_outputs``); the loss sums the heads'."""
        if sum(heads.batch_sizes) != hidden.shape[0]:
            raise AdapterConfigError(f"the head setup {heads!r} covers {sum(heads.batch_sizes)} rows, but the batch "
                                     f"has {hidden.shape[0]}; make batch_sizes add up to it")
        outs, start = [], 0
        for name, n in zip(heads, heads.batch_sizes):
            pick = lambda t, a=start, b=start + n: t[a:b] if torch.is_tensor(t) else t  # noqa: E731
            outs.append(self._head(name, pick(hidden), pick(pooled), pick(attention_mask),
                                   {k: pick(v) for k, v in label_kw.items()}))
            start += n
        logits = [o.logits for o in outs]
        if all(torch.is_tensor(x) and x.shape[1:] == logits[0].shape[1:] for x in logits):
            logits = torch.cat(logits)
        losses = [o.loss for o in outs if o.loss is not None]
        return AdapterModelOutput(loss=torch.stack(losses).sum() if losses else None, logits=logits,
                                  hidden_states=hidden, head=heads)

    def _backbone_pass(self, input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs):
        """The backbone's pass: (the input rows, hidden states, pooled output, attention mask);
        multiple-choice inputs (batch, choices, seq) run as batch * choices rows."""
        rows = input_ids if input_ids is not None else inputs_embeds
        multiple_choice = rows is not None and rows.dim() == (3 if input_ids is not None else 4)
        if multiple_choice:  # (batch, choices, seq) -> (batch * choices, seq)
            flat = lambda t: t.reshape(-1, t.shape[-1]) if t is not None else None  # noqa: E731
            input_ids, attention_mask, token_type_ids = flat(input_ids), flat(attention_mask), flat(token_type_ids)
            rows = input_ids
        backbone_kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        if token_type_ids is not None:
            backbone_kwargs["token_type_ids"] = token_type_ids
        outputs = self.backbone(**backbone_kwargs)
        return rows, outputs[0], getattr(outputs, "pooler_output", None), attention_mask

    def _forward_rows(self, adapter_names, head, input_ids, attention_mask, token_type_ids, inputs_embeds, **kwargs):
        """A mixed batch: row i runs adapter ``adapter_names[i]`` (``None`` or ``"__base__"``: none)
        and then the head named like it, else ``head`` (or the active one). ``logits[i]`` is row
        i's: one tensor when every row has the same head, else a list with an entry per row
        (``None`` for a row without a head); ``head`` lists each row's. The heads run once per
        distinct head, on its rows."""
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        rows = self.rows_setup(adapter_names, batch)
        fallback = head if head is not None else self.context.call.head
        with self.context.using(CallSetup(rows)):
            _, hidden, pooled, attention_mask = self._backbone_pass(input_ids, attention_mask, token_type_ids,
                                                                    inputs_embeds, **kwargs)
        heads = [n if n in self.heads else (fallback if isinstance(fallback, str) else None) for n in rows.names]
        distinct = [h for h in dict.fromkeys(heads) if h is not None]
        no_labels = dict(labels=None, start_positions=None, end_positions=None)
        if len(distinct) == 1 and None not in heads:
            return AdapterModelOutput(logits=self._head(distinct[0], hidden, pooled, attention_mask, no_labels).logits,
                                      hidden_states=hidden, head=heads)
        logits = [None] * batch
        for name in distinct:
            members = [i for i, h in enumerate(heads) if h == name]
            idx = torch.tensor(members, device=hidden.device)
            pick = lambda t: t.index_select(0, idx) if t is not None else None  # noqa: E731
            part = self._head(name, pick(hidden), pick(pooled), pick(attention_mask), no_labels).logits
            for j, i in enumerate(members):
                logits[i] = tuple(p[j] for p in part) if isinstance(part, tuple) else part[j]
        return AdapterModelOutput(logits=logits, hidden_states=hidden, head=heads)

    def rows_setup(self, adapter_names, batch: int) -> Rows:
        """``adapter_names`` checked: one per row, each loaded, of a method that runs mixed
        batches, and no adapter merged into the weights (it would act on every row)."""
        rows = Rows(adapter_names)
        if len(rows) != batch:
            raise AdapterConfigError(f"adapter_names has {len(rows)} entries for a batch of {batch} rows; give one "
                                     f"name per row ({NO_ADAPTER!r} or None for a row without an adapter)")
        for name in rows.flatten():
            self._require_adapter(name)
            method = self._method_of(name)
            if not method.supports_rows:
                able = [n for n, spec in registry.methods().items() if spec.method_class.supports_rows]
                raise AdapterConfigError(f"{name!r} is a {method.name} adapter, which cannot run in a mixed batch; "
                                         f"methods that can: {', '.join(able)}. Group its rows in a batch of their own")
        merged = [n for method in self._methods.values() for n in method.merged()]
        if merged:
            raise AdapterConfigError(f"{', '.join(map(repr, merged))} is merged into the weights and would act on "
                                     "every row of a mixed batch; call reset_adapter() first")
        return rows

    def _head(self, name, hidden, pooled, attention_mask, label_kw):
        if name not in self.heads:
            raise AdapterNotFoundError(f"no head named {name!r} (heads: {', '.join(self.heads) or 'none'})")
        return self.heads[name](hidden, pooled, attention_mask=attention_mask, **label_kw)

    # -- generation -----------------------------------------------------------------------

    def generate(self, *args, adapter_names=None, **kwargs):
        """transformers' ``generate`` (greedy, sampling, beam search, KV cache) with the setup in
        force and the active ``causal_lm`` head. It runs a transformers ``*ForCausalLM`` made of
        our backbone and that head, so generation is transformers' own forward and loop.
        ``adapter_names``: one adapter per prompt (a mixed batch; every row uses that head)."""
        call = self.context.call
        head = call.head
        if adapter_names is None and call.setup is not None and call.setup.parallel_channels > 1:
            return self._generate_parallel(call, args, kwargs)
        if adapter_names is None:
            return self._causal_lm(head).generate(*args, **kwargs)
        prompts = kwargs.get("input_ids", args[0] if args else None)
        rows = self.rows_setup(adapter_names, prompts.shape[0] if prompts is not None else len(adapter_names))
        with self.context.using(CallSetup(rows, head)):
            return self._causal_lm(head).generate(*args, **kwargs)

    def _generate_parallel(self, call: CallSetup, args, kwargs):
        """A Parallel setup generates N sequences per prompt, rows i*B.. from branch i: the prompts
        are replicated before generation (as AdapterHub's generate does), and the pass knows its
        inputs hold the copies already."""
        lm, copies = self._causal_lm(call.head), call.setup.parallel_channels
        per_row = ("inputs", "input_ids", "inputs_embeds", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
        prompts = args[0] if args else next((kwargs[k] for k in per_row[:3] if torch.is_tensor(kwargs.get(k))), None)
        if not torch.is_tensor(prompts):
            raise AdapterConfigError(f"generate() with the Parallel setup {call.setup!r} needs the prompts as a tensor "
                                     "(input_ids or inputs_embeds), which it replicates once per branch")
        rows = prompts.shape[0]
        args = (C.repeat_rows(args[0], rows, copies), *args[1:]) if args else args
        kwargs = {k: C.repeat_rows(v, rows, copies) if k in per_row else v for k, v in kwargs.items()}
        with self.context.using(replace(call, replicated=True)):
            return lm.generate(*args, **kwargs)

    def _causal_lm(self, head) -> PreTrainedModel:
        """The transformers LM (``*ForCausalLM``, or ``*ForConditionalGeneration`` around a
        ``seq2seq_lm`` head) that generate() runs: our modules in a shell made on the meta device."""
        if self.family.kind == "encoder":
            raise AdapterConfigError(f"generate() needs a decoder (Llama, Mistral, GPT-2, ...) or an encoder-decoder "
                                     f"(T5, BART, ...); this is a {self.config.model_type} encoder")
        seq2seq = self.family.kind == "encoder-decoder"
        kind, example = ("seq2seq_lm", "*ForConditionalGeneration") if seq2seq else ("causal_lm", "*ForCausalLM")
        if (not isinstance(head, str) or head not in self.heads or self.heads[head].config["head_type"] != kind
                or len(self.heads[head]) != 1):
            raise AdapterConfigError(
                f"generate() needs an active one-layer {kind} head, and the active head is {head!r}; load a "
                f"{example} checkpoint (its head becomes 'default') or add_head(<name>, '{kind}')"
            )
        linear, lm = self.heads[head][0], self._lm_shells.get(head)
        if lm is None or lm.lm_head is not linear:
            mapping = MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING if seq2seq else MODEL_FOR_CAUSAL_LM_MAPPING
            with torch.device("meta"):  # every module of it is replaced by ours
                lm = mapping[type(self.config)](self.config)
            if lm.base_model is lm:  # T5: the stacks are the shell's own children
                for name, module in self.backbone.named_children():
                    setattr(lm, name, module)
            else:
                setattr(lm, self.base_model_prefix, self.backbone)
            if "final_logits_bias" in dict(lm.named_buffers()):  # BART's; our heads have none of their own
                lm.final_logits_bias = torch.zeros(1, self.config.vocab_size, device=linear.weight.device)
            lm.lm_head = linear
            lm.generation_config = self._generation_config or GenerationConfig.from_model_config(self.config)
            lm.training = False  # the shell only; the backbone's mode stays ours
            self._lm_shells[head] = lm
        return lm

    # -- reporting ------------------------------------------------------------------------

    def adapter_summary(self, as_dict: bool = False):
        """Name, method, parameters, % of the backbone, active and trainable, per adapter, fusion and head."""
        rows, backbone = summary_rows(self)
        return rows if as_dict else format_summary(rows, self.config.model_type, backbone)


