"""Prediction heads, saved and loaded with the adapter of the same name.

Each head is an ``nn.Sequential`` laid out as AdapterHub's (dropout, linear, activation, ...,
dropout, linear), so weight keys read ``heads.<name>.1.weight`` in both libraries. Its config
dict (``head_type``, ``num_labels``, ``layers``, ``activation_function``, ``label2id``, ...)
is what ``head_config.json`` holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import AdapterConfigError
from .methods.bottleneck import Activation


@dataclass
class HeadOutput:
    logits: torch.Tensor | tuple
    loss: torch.Tensor | None = None


class PredictionHead(nn.Sequential):
    """Base: builds AdapterHub's layer stack; subclasses pick the input, shape and loss."""

    head_type: str
    defaults: dict = {}

    def __init__(self, name: str, config: dict, hidden_size: int, default_dropout: float):
        super().__init__()
        self.name = name
        self.config = {"head_type": self.head_type, **self.defaults, **config}
        c = self.config
        dropout_prob = c["dropout_prob"] if c.get("dropout_prob") is not None else default_dropout
        out_size = self.out_size()
        bias = c.get("bias", True)
        layers: list[nn.Module] = []
        for i in range(c["layers"]):
            layers.append(nn.Dropout(dropout_prob))
            if i < c["layers"] - 1:
                layers.append(nn.Linear(hidden_size, hidden_size))
                if c["activation_function"]:
                    layers.append(Activation(c["activation_function"]))
            else:
                layers.append(nn.Linear(hidden_size, out_size, bias=bias))
        for i, module in enumerate(layers):
            self.add_module(str(i), module)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(0.0, 0.02)
                if module.bias is not None:
                    module.bias.data.zero_()

    def out_size(self) -> int:
        return self.config["num_labels"]

    @property
    def id2label(self) -> dict[int, str] | None:
        label2id = self.config.get("label2id")
        return {int(i): label for label, i in label2id.items()} if label2id else None

    def cls(self, hidden: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        if self.config.get("use_pooler"):
            if pooled is None:
                raise AdapterConfigError(f"head {self.name!r} uses the pooler, but the backbone has none")
            return pooled
        return hidden[:, 0]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The layer stack itself (``forward`` adds input selection and the loss)."""
        return nn.Sequential.forward(self, x)


class ClassificationHead(PredictionHead):
    """Sequence classification on the first token; one label means regression (MSE)."""

    head_type = "classification"
    defaults = {"num_labels": 2, "layers": 2, "activation_function": "tanh", "label2id": None, "use_pooler": False,
                "bias": True, "dropout_prob": None}

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(self.cls(hidden, pooled))
        loss = None
        if labels is not None:
            if self.config["num_labels"] == 1:
                loss = F.mse_loss(logits.view(-1), labels.view(-1).to(logits.dtype))
            else:
                loss = F.cross_entropy(logits.view(-1, self.config["num_labels"]), labels.view(-1))
        return HeadOutput(logits, loss)


class MultiLabelClassificationHead(ClassificationHead):
    """Independent sigmoid per label (BCE on a 0/1 label matrix)."""

    head_type = "multilabel_classification"

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(self.cls(hidden, pooled))
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) if labels is not None else None
        return HeadOutput(logits, loss)


class TaggingHead(PredictionHead):
    """One label per token; positions labelled -100 (padding, inner word pieces) are ignored."""

    head_type = "tagging"
    defaults = {"num_labels": 2, "layers": 1, "activation_function": "tanh", "label2id": None, "dropout_prob": None}

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(hidden)
        loss = None
        if labels is not None:
            flat = labels.view(-1)
            if attention_mask is not None:
                flat = torch.where(attention_mask.view(-1) == 1, flat, torch.full_like(flat, -100))
            loss = F.cross_entropy(logits.view(-1, self.config["num_labels"]), flat, ignore_index=-100)
        return HeadOutput(logits, loss)


class MultipleChoiceHead(PredictionHead):
    """Scores each (context, choice) row; rows regroup to (batch, num_choices)."""

    head_type = "multiple_choice"
    defaults = {"num_choices": 2, "layers": 2, "activation_function": "tanh", "label2id": None, "use_pooler": False,
                "dropout_prob": None}

    def out_size(self) -> int:
        return 1

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(self.cls(hidden, pooled)).view(-1, self.config["num_choices"])
        loss = F.cross_entropy(logits, labels.view(-1)) if labels is not None else None
        return HeadOutput(logits, loss)


class QuestionAnsweringHead(PredictionHead):
    """Extractive QA: a start and an end logit per token."""

    head_type = "question_answering"
    defaults = {"num_labels": 2, "layers": 1, "activation_function": "tanh", "label2id": None, "dropout_prob": None}

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, start_positions=None,
                end_positions=None, **_):
        logits = self.project(hidden)
        start, end = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            n = start.size(1)
            start_positions, end_positions = start_positions.clamp(0, n), end_positions.clamp(0, n)
            loss = (F.cross_entropy(start, start_positions, ignore_index=n)
                    + F.cross_entropy(end, end_positions, ignore_index=n)) / 2
        return HeadOutput((start, end), loss)


HEADS: dict[str, type[PredictionHead]] = {
    cls.head_type: cls
    for cls in (ClassificationHead, MultiLabelClassificationHead, TaggingHead, MultipleChoiceHead,
                QuestionAnsweringHead)
}
ALIASES = {"regression": ("classification", {"num_labels": 1}), "token_classification": ("tagging", {})}


def build_head(name: str, head_type: str, hidden_size: int, default_dropout: float, **config) -> PredictionHead:
    """A head by type name; ``id2label`` (dict or list of names) becomes AdapterHub's ``label2id``."""
    if head_type in ALIASES:
        head_type, extra = ALIASES[head_type]
        config = {**extra, **config}
    if head_type not in HEADS:
        raise AdapterConfigError(
            f"unknown head type {head_type!r}; choose one of {', '.join(sorted([*HEADS, *ALIASES]))}"
        )
    id2label = config.pop("id2label", None)
    if isinstance(id2label, (list, tuple)):
        id2label = dict(enumerate(id2label))
    if id2label:
        config["label2id"] = {label: int(i) for i, label in id2label.items()}
        config.setdefault("num_labels", len(id2label))
        if head_type != "multiple_choice" and config["num_labels"] != len(id2label):
            raise AdapterConfigError(
                f"head {name!r}: num_labels={config['num_labels']} but {len(id2label)} label names were given"
            )
    cls = HEADS[head_type]
    unknown = set(config) - set(cls.defaults) - {"head_type"}
    if unknown:
        raise AdapterConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for a {head_type} head; valid: {', '.join(cls.defaults)}"
        )
    return cls(name, config, hidden_size, default_dropout)
