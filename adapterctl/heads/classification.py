"""Heads that label a whole sequence: classification (also regression and multi-label) and
multiple choice."""

from __future__ import annotations

import torch.nn.functional as F

from .base import HeadOutput, PredictionHead


class ClassificationHead(PredictionHead):
    """Sequence classification on the first token; one label means regression (MSE)."""

    head_type = "classification"
    defaults = {"num_labels": 2, "layers": 2, "activation_function": "tanh", "label2id": None, "use_pooler": False,
                "bias": True, "dropout_prob": None}

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(self.cls(hidden, pooled, attention_mask))
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
        logits = self.project(self.cls(hidden, pooled, attention_mask))
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) if labels is not None else None
        return HeadOutput(logits, loss)


class MultipleChoiceHead(PredictionHead):
    """Scores each (context, choice) row; rows regroup to (batch, num_choices)."""

    head_type = "multiple_choice"
    defaults = {"num_choices": 2, "layers": 2, "activation_function": "tanh", "label2id": None, "use_pooler": False,
                "dropout_prob": None}

    def out_size(self) -> int:
        return 1

    def forward(self, hidden, pooled=None, attention_mask=None, labels=None, **_):
        logits = self.project(self.cls(hidden, pooled, attention_mask)).view(-1, self.config["num_choices"])
        loss = F.cross_entropy(logits, labels.view(-1)) if labels is not None else None
        return HeadOutput(logits, loss)
