"""Encoder families: BERT and its kin (post-LN: each sub-layer ends in ``LayerNorm(h + x)``)."""

from __future__ import annotations

from dataclasses import replace

from .spec import POST_LN, Family, LayerStack, ResidualSite, StaticHead

_TAGGING = StaticHead({"head_type": "tagging", "layers": 1, "activation_function": None}, (None, "classifier"))
_QA = StaticHead({"head_type": "question_answering", "layers": 1, "activation_function": None}, (None, "qa_outputs"))


def _classifier(activation: str, first: str, last: str) -> StaticHead:
    """A two-layer sequence-classification head on the first token (RoBERTa, ELECTRA, DistilBERT)."""
    return StaticHead({"head_type": "classification", "layers": 2, "activation_function": activation,
                       "use_pooler": False}, (None, first, None, None, last))


BERT = Family(
    kind="encoder",
    embeddings="embeddings",
    stacks={"encoder": LayerStack(
        path="encoder.layer",
        attention="attention.self",
        sites={
            "mh_adapter": ResidualSite(POST_LN, output="attention.output.dropout", residual="attention.output",
                                       residual_arg=("input_tensor", 1), container="attention.output",
                                       layer_norm="attention.output.LayerNorm"),
            "output_adapter": ResidualSite(POST_LN, output="output.dropout", residual="output",
                                           residual_arg=("input_tensor", 1), container="output",
                                           layer_norm="output.LayerNorm"),
        },
        projections={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                     "o": "attention.output.dense", "intermediate": "intermediate.dense", "output": "output.dense"},
    )},
    static_heads={
        "ForSequenceClassification": StaticHead(
            {"head_type": "classification", "layers": 1, "activation_function": None, "use_pooler": True},
            (None, "classifier")),
        "ForTokenClassification": _TAGGING,
        "ForQuestionAnswering": _QA,
    },
)

ROBERTA = replace(BERT, static_heads={**BERT.static_heads,
                                      "ForSequenceClassification": _classifier("tanh", "classifier.dense",
                                                                                "classifier.out_proj")})
ELECTRA = replace(BERT, static_heads={**BERT.static_heads,
                                      "ForSequenceClassification": _classifier("gelu", "classifier.dense",
                                                                                "classifier.out_proj")})

DISTILBERT = Family(
    kind="encoder",
    embeddings="embeddings",
    stacks={"encoder": LayerStack(
        path="transformer.layer",
        attention="attention",
        sites={
            "mh_adapter": ResidualSite(POST_LN, output="attention", residual="attention", residual_arg=("hidden_states", 0),
                                       container="attention_adapters", layer_norm="sa_layer_norm"),
            "output_adapter": ResidualSite(POST_LN, output="ffn", residual="ffn", residual_arg=("input", 0),
                                           container="output_adapters", layer_norm="output_layer_norm"),
        },
        projections={"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                     "o": "attention.out_lin", "intermediate": "ffn.lin1", "output": "ffn.lin2"},
    )},
    static_heads={
        "ForSequenceClassification": _classifier("relu", "pre_classifier", "classifier"),
        "ForTokenClassification": _TAGGING,
        "ForQuestionAnswering": _QA,
    },
)

FAMILIES = {"bert": BERT, "roberta": ROBERTA, "xlm-roberta": ROBERTA, "electra": ELECTRA, "distilbert": DISTILBERT}
