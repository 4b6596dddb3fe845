"""Heads that label tokens: tagging and extractive question answering."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import HeadOutput, PredictionHead


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
