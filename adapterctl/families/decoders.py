"""Decoder families: Llama and its kin with the same layout (Mistral, Qwen2/3, Gemma 2/3), GPT-2
and GPT-NeoX (pre-LN: each sub-layer's input is normalized, and its output is added to the
residual inline, ``x + h``)."""

from __future__ import annotations

from dataclasses import replace

from .spec import PRE_LN, Family, LayerStack, ResidualSite, StaticHead

LLAMA = Family(
    kind="decoder",
    embeddings="embed_tokens",
    stacks={"decoder": LayerStack(
        path="layers",
        attention="self_attn",
        # AdapterHub's Llama mixin: attention_adapters after self-attention, output_adapters
        # after the MLP, each given the sub-layer output and the residual, no LayerNorm.
        sites={
            "mh_adapter": ResidualSite(PRE_LN, output="self_attn", residual="input_layernorm",
                                       residual_arg=("hidden_states", 0), container="attention_adapters"),
            "output_adapter": ResidualSite(PRE_LN, output="mlp", residual="post_attention_layernorm",
                                           residual_arg=("hidden_states", 0), container="output_adapters"),
        },
        # AdapterHub's Llama mixin wraps mlp.down_proj as "intermediate" and mlp.up_proj as
        # "output" (the reverse of its BERT naming); its saved LoRA weights sit there.
        projections={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                     "o": "self_attn.o_proj", "intermediate": "mlp.down_proj", "output": "mlp.up_proj"},
    )},
    static_heads={
        "ForCausalLM": StaticHead({"head_type": "causal_lm"}, ("lm_head",)),
        "ForSequenceClassification": StaticHead(
            {"head_type": "classification", "layers": 1, "dropout_prob": 0, "activation_function": None,
             "bias": False}, (None, "score")),
        "ForTokenClassification": StaticHead({"head_type": "tagging", "layers": 1, "activation_function": None},
                                             (None, "score")),
    },
)

# AdapterHub reaches Qwen2 through its plugin interface, which names the MLP the other way round.
QWEN2 = replace(LLAMA, stacks={"decoder": replace(
    LLAMA.stacks["decoder"],
    projections={**LLAMA.stacks["decoder"].projections, "intermediate": "mlp.up_proj", "output": "mlp.down_proj"},
)})

# AdapterHub's GPT-2 mixin: the same two sites (the residual is the input of ln_1 / ln_2); LoRA's
# q, k and v are column slices of the fused c_attn, a Conv1D (weight stored (in, out)).
GPT2 = Family(
    kind="decoder",
    embeddings="drop",  # AdapterHub's invertible adapters act on token + position embeddings, after dropout
    stacks={"decoder": LayerStack(
        path="h",
        attention="attn",
        sites={
            "mh_adapter": ResidualSite(PRE_LN, output="attn", residual="ln_1", residual_arg=("input", 0),
                                       container="attention_adapters"),
            "output_adapter": ResidualSite(PRE_LN, output="mlp", residual="ln_2", residual_arg=("input", 0),
                                           container="output_adapters"),
        },
        projections={"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn", "o": "attn.c_proj",
                     "intermediate": "mlp.c_fc", "output": "mlp.c_proj"},
        fused={"attn.c_attn": ("q", "k", "v")},
    )},
    static_heads={
        "LMHeadModel": StaticHead({"head_type": "causal_lm"}, ("lm_head",)),
        "ForSequenceClassification": LLAMA.static_heads["ForSequenceClassification"],
        "ForTokenClassification": StaticHead({"head_type": "tagging", "layers": 1, "activation_function": None},
                                             (None, "classifier")),
    },
)

# Gemma 2/3 normalize each sub-layer's output before the add; AdapterHub's plugin hooks the
# attention's and the MLP's outputs (before those norms), as here, with Qwen2's MLP names.
GEMMA2 = replace(QWEN2, stacks={"decoder": replace(QWEN2.stacks["decoder"], sites={
    **QWEN2.stacks["decoder"].sites,
    "output_adapter": replace(QWEN2.stacks["decoder"].sites["output_adapter"], residual="pre_feedforward_layernorm"),
})})

# GPT-NeoX (Pythia): no AdapterHub support, so its names follow our other decoders. Attention and
# MLP usually read the same x and both add to it (use_parallel_residual); q, k and v are fused
# per head in attention.query_key_value.
GPT_NEOX = Family(
    kind="decoder",
    embeddings="emb_dropout",
    stacks={"decoder": LayerStack(
        path="layers",
        attention="attention",
        sites={
            "mh_adapter": ResidualSite(PRE_LN, output="post_attention_dropout", residual="input_layernorm",
                                       residual_arg=("input", 0), container="attention_adapters"),
            "output_adapter": ResidualSite(PRE_LN, output="post_mlp_dropout", residual="post_attention_layernorm",
                                           residual_arg=("input", 0), container="output_adapters"),
        },
        projections={"q": "attention.query_key_value", "k": "attention.query_key_value",
                     "v": "attention.query_key_value", "o": "attention.dense",
                     "intermediate": "mlp.dense_h_to_4h", "output": "mlp.dense_4h_to_h"},
        fused={"attention.query_key_value": ("q", "k", "v")},
        fused_groups="num_attention_heads",
    )},
    static_heads={
        "ForCausalLM": StaticHead({"head_type": "causal_lm"}, ("lm_head",)),
        "ForSequenceClassification": LLAMA.static_heads["ForSequenceClassification"],
        "ForTokenClassification": GPT2.static_heads["ForTokenClassification"],
    },
)

FAMILIES = {"llama": LLAMA, "mistral": LLAMA, "qwen2": QWEN2, "qwen3": QWEN2, "gemma2": GEMMA2,
            "gemma3_text": GEMMA2, "gpt2": GPT2, "gpt_neox": GPT_NEOX}
