"""Prediction heads, saved and loaded with the adapter of the same name: one module per kind,
and ``build_head`` to make one by its type name."""

from __future__ import annotations

from ..errors import AdapterConfigError
from .base import HeadOutput, PredictionHead
from .classification import ClassificationHead, MultiLabelClassificationHead, MultipleChoiceHead
from .language_modeling import CausalLMHead, Seq2SeqLMHead
from .tokens import QuestionAnsweringHead, TaggingHead

HEADS: dict[str, type[PredictionHead]] = {
    cls.head_type: cls
    for cls in (ClassificationHead, MultiLabelClassificationHead, TaggingHead, MultipleChoiceHead,
                QuestionAnsweringHead, CausalLMHead, Seq2SeqLMHead)
}
ALIASES = {"regression": ("classification", {"num_labels": 1}), "token_classification": ("tagging", {})}


def build_head(name: str, head_type: str, model_config, default_dropout: float, pool_last: bool = False,
               **config) -> PredictionHead:
    """A head by type name; ``id2label`` (dict or list of names) becomes AdapterHub's ``label2id``.
    ``pool_last``: the backbone is a decoder, whose sequence representation is its last token."""
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
    return cls(name, cls.complete(config, model_config), model_config, default_dropout, pool_last)


__all__ = ["ALIASES", "HEADS", "HeadOutput", "PredictionHead", "build_head"]
