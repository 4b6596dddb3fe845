"""Encoder-decoder families: T5 / mT5 and BART / mBART. Two stacks (encoder, decoder), whose
layers AdapterHub numbers on across both (``leave_out``), and a third site in the decoder where
the cross-attention's output joins the residual (``cross_adapter``)."""

from __future__ import annotations

from dataclasses import replace

from .spec import POST_LN, PRE_LN, Family, LayerStack, ResidualSite, StaticHead

_LM = {"ForConditionalGeneration": StaticHead({"head_type": "seq2seq_lm"}, ("lm_head",))}


def _t5_site(sub_layer: int) -> ResidualSite:
    """A T5 sub-layer ``x + dropout(f(layer_norm(x)))``: h is its dropout's output, x its norm's
    input, and AdapterHub keeps the adapters in the sub-layer module itself (``layer.<i>.adapters``)."""
    return ResidualSite(PRE_LN, output=f"layer.{sub_layer}.dropout", residual=f"layer.{sub_layer}.layer_norm",
                        residual_arg=("hidden_states", 0), container=f"layer.{sub_layer}")


def _t5_stack(stack: str, ff: int) -> LayerStack:
    """``ff``: the index of the feed-forward sub-layer (1 in the encoder, 2 after the decoder's cross-attention)."""
    attention = ("layer.0.SelfAttention",) + (("layer.1.EncDecAttention",) if ff == 2 else ())
    sites = {"mh_adapter": _t5_site(0), "output_adapter": _t5_site(ff)}
    if ff == 2:
        sites["cross_adapter"] = _t5_site(1)
    return LayerStack(
        path=f"{stack}.block",
        attention="layer.0.SelfAttention",
        sites=sites,
        self_location="self_prefix" if ff == 2 else "encoder_prefix",
        cross_attention="layer.1.EncDecAttention" if ff == 2 else "",
        # AdapterHub's selfattn_lora adapts T5's self- and cross-attention alike
        projections={**{key: tuple(f"{a}.{key}" for a in attention) for key in ("q", "k", "v", "o")},
                     "intermediate": f"layer.{ff}.DenseReluDense.wi", "output": f"layer.{ff}.DenseReluDense.wo"},
    )


T5 = Family(
    kind="encoder-decoder",
    embeddings="encoder.embed_tokens",  # invertible adapters: the encoder's embeddings only, as AdapterHub's
    stacks={"encoder": _t5_stack("encoder", 1), "decoder": _t5_stack("decoder", 2)},
    static_heads=_LM,
    invertible_owner="encoder",  # saved as <prefix>.encoder.invertible_adapters.<name>, as AdapterHub does
)

# mT5's feed-forward is gated (wi_0 gates wi_1); AdapterHub adapts wi_1 as "intermediate".
MT5 = replace(T5, stacks={name: replace(stack, projections={
    **stack.projections, "intermediate": stack.projections["intermediate"] + "_1"}) for name, stack in T5.stacks.items()})


def _bart_stack(stack: str, pre_ln: bool) -> LayerStack:
    """BART is post-LN (``LayerNorm(x + dropout(h))``, the dropout a function call); mBART is
    pre-LN (``x + dropout(h)``, the norm before each sub-layer). AdapterHub's containers:
    ``attention_adapters``, ``cross_attention_adapters``, ``output_adapters``."""
    def site(output: str, norm: str, post_residual: tuple[str, str], container: str) -> ResidualSite:
        if pre_ln:
            return ResidualSite(PRE_LN, output=output, residual=norm, residual_arg=("input", 0), container=container)
        return ResidualSite(POST_LN, output=output, residual=post_residual[0], residual_arg=(post_residual[1], 0),
                            container=container, layer_norm=norm, dropout_fn=True)

    decoder = stack == "decoder"
    attention = ("self_attn",) + (("encoder_attn",) if decoder else ())
    sites = {
        "mh_adapter": site("self_attn", "self_attn_layer_norm", ("self_attn", "hidden_states"), "attention_adapters"),
        "output_adapter": site("fc2", "final_layer_norm", ("fc1", "input"), "output_adapters"),
    }
    if decoder:
        sites["cross_adapter"] = site("encoder_attn", "encoder_attn_layer_norm", ("encoder_attn", "hidden_states"),
                                      "cross_attention_adapters")
    return LayerStack(
        path=f"{stack}.layers",
        attention="self_attn",
        sites=sites,
        self_location="self_prefix" if decoder else "encoder_prefix",
        cross_attention="encoder_attn" if decoder else "",
        projections={**{key: tuple(f"{a}.{key}_proj" for a in attention) for key in ("q", "k", "v")},
                     "o": tuple(f"{a}.out_proj" for a in attention), "intermediate": "fc1", "output": "fc2"},
    )


BART = Family(
    kind="encoder-decoder",
    embeddings="encoder.layernorm_embedding",  # invertible adapters: after the encoder's embedding norm (AdapterHub)
    stacks={"encoder": _bart_stack("encoder", False), "decoder": _bart_stack("decoder", False)},
    static_heads=_LM,
    invertible_owner="encoder",
)
MBART = replace(BART, stacks={"encoder": _bart_stack("encoder", True), "decoder": _bart_stack("decoder", True)})

FAMILIES = {"t5": T5, "mt5": MT5, "bart": BART, "mbart": MBART}
