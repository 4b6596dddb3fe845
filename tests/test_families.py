"""Every decoder and encoder-decoder family on a tiny random config with its LM head: a fresh
adapter of each method is an identity, one step of training changes the outputs, save -> load
reproduces them exactly, and greedy generation with a fresh adapter gives the bare model's
tokens. GPT-2, T5, BART and mBART also against outputs AdapterHub's library computed
(tests/fixtures/adapterhub_decoders/, FACTS.md)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BartConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MBartConfig,
    MistralConfig,
    MT5Config,
    Qwen2Config,
    Qwen3Config,
    T5Config,
)

from adapterctl import AdapterModel
from adapterctl.errors import AdapterConfigError
from adapterctl.run.build import checkpoint_activations
from conftest import TINY_CONFIGS, perturb

FIXTURES = Path(__file__).parent / "fixtures" / "adapterhub_decoders"
GPT2 = FIXTURES / "gpt2"
TOL = 1e-5
_LLAMA_LIKE = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=99, max_position_embeddings=64)
CONFIGS = {
    "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=37, vocab_size=99, n_positions=64),
    "llama": lambda: LlamaConfig(**_LLAMA_LIKE),
    "mistral": lambda: MistralConfig(**_LLAMA_LIKE),
    "qwen2": lambda: Qwen2Config(**_LLAMA_LIKE),
    "qwen3": lambda: Qwen3Config(**_LLAMA_LIKE, head_dim=8),
    "gemma2": lambda: Gemma2Config(**_LLAMA_LIKE, head_dim=8),
    "gemma3_text": lambda: Gemma3TextConfig(**_LLAMA_LIKE, head_dim=8),
    "gpt_neox": lambda: GPTNeoXConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                      vocab_size=99, max_position_embeddings=64),
}
_T5_LIKE = dict(d_model=32, d_ff=37, num_layers=2, num_heads=4, d_kv=8, vocab_size=99, decoder_start_token_id=0)
_BART_LIKE = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99, max_position_embeddings=64)
SEQ2SEQ = {
    "t5": lambda: T5Config(**_T5_LIKE),
    "t5_v1_1": lambda: T5Config(**_T5_LIKE, feed_forward_proj="gated-gelu"),  # model_type t5, wi_0/wi_1
    "mt5": lambda: MT5Config(**_T5_LIKE),
    "bart": lambda: BartConfig(**_BART_LIKE),
    "mbart": lambda: MBartConfig(**_BART_LIKE),
}
METHODS = {"pfeiffer": "pfeiffer", "houlsby": "houlsby",
           "lora": {"architecture": "lora", "attn_matrices": ["q", "k", "v"], "intermediate_lora": True,
                    "output_lora": True},
           "ia3": "ia3"}


def causal_lm(family: str, seed: int = 0) -> AdapterModel:
    torch.manual_seed(seed)
    if family in SEQ2SEQ:
        return AdapterModel(AutoModelForSeq2SeqLM.from_config(SEQ2SEQ[family]()).eval()).eval()
    checkpoint = AutoModelForCausalLM.from_config(CONFIGS[family]()).eval()
    return AdapterModel(checkpoint).eval()


def prompts(family: str = "gpt2"):
    """Two prompts: decoders' second row left-padded (pad id 0), encoder-decoders' right-padded,
    with decoder inputs."""
    ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    if family not in SEQ2SEQ:
        mask[1, :3] = 0
        return {"input_ids": ids * mask, "attention_mask": mask}
    mask[1, 4:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask, "decoder_input_ids": ids[:, :4].flip(0)}


def logits(model, setup=None):
    with torch.no_grad(), model.adapter_setup(setup, head="default"):
        return model(**prompts(model.config.model_type)).logits


@pytest.mark.parametrize("family", [*CONFIGS, *SEQ2SEQ])
def test_fresh_adapters_are_identities_and_trained_ones_change_outputs(family):
    model = causal_lm(family)
    kind = "seq2seq_lm" if family in SEQ2SEQ else "causal_lm"
    assert model.active_head == "default" and model.heads["default"].config["head_type"] == kind
    bare = logits(model)
    for name, config in METHODS.items():
        model.add_adapter(name, config)
        assert (logits(model, name) - bare).abs().max().item() <= 1e-6, name
    model.train_adapter("lora", train_head=False)
    batch = prompts(family)
    if family in SEQ2SEQ:  # the decoder's inputs come from the labels, shifted right
        del batch["decoder_input_ids"]
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=10.0).step()
    model.eval()
    assert (logits(model, "lora") - bare).abs().max().item() > 1e-4
    assert torch.equal(logits(model), bare)  # the backbone's weights did not move


@pytest.mark.parametrize("family, preset", [*((f, p) for f in ["bert", "distilbert", *CONFIGS, *SEQ2SEQ]
                                                for p in ("houlsby", "unipelt")),
                                              *((f, "loreft") for f in ("bert", "llama", "t5", "bart"))])
def test_gradient_checkpointing_gives_the_same_gradients(family, preset):
    """``trainer.gradient_checkpointing`` re-runs each layer's forward in backward, without the
    layer's own hooks (transformers 5): each method finds there what it found in the forward
    (UniPELT: gated prefixes, LoRA and a bottleneck adapter; LoReFT: a hook after the layer)."""
    def grads(checkpointing: bool) -> dict:
        config = {**TINY_CONFIGS, **CONFIGS, **SEQ2SEQ}[family]()
        for key in [k for k in config.to_dict() if "dropout" in k or "pdrop" in k]:  # both runs compute one function
            setattr(config, key, 0.0)
        torch.manual_seed(0)
        model = AdapterModel(AutoModel.from_config(config))
        model.add_adapter("a", preset)
        perturb(model, ".a.")
        model.train_adapter("a")
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointing:
            checkpoint_activations(model)  # what trainer.gradient_checkpointing=true runs
        model(**prompts(family)).hidden_states.pow(2).mean().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and sum(g is not None for g in plain.values()) >= 4
    for name, grad in plain.items():
        assert (grad is None) == (checkpointed[name] is None), name
        assert grad is None or torch.allclose(grad, checkpointed[name], atol=1e-6), name


PRESETS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "adapter").glob("*.yaml") if p.stem != "none")


@pytest.mark.parametrize("preset", PRESETS)
def test_a_bfloat16_backbone_takes_every_method(preset, tmp_path):
    """LLMs load in bfloat16: new adapters and heads take the backbone's dtype (ReFT computes in
    float32, which torch's orthogonal parametrization needs), an adapter saved from a float32
    model loads with its outputs to bfloat16's precision, and it trains."""
    def llama(dtype):
        torch.manual_seed(0)
        return AdapterModel(AutoModel.from_config(CONFIGS["llama"]())).to(dtype).eval()

    source, batch = llama(torch.float32), prompts()
    source.add_adapter("a", preset, **({"reduction_factor": 4} if preset.startswith("compacter") else {}))
    source.add_head("a", num_labels=2)
    perturb(source, ".a.", std=0.3)
    source.save_adapter(tmp_path / "a", "a")
    half = llama(torch.bfloat16)
    half.load_adapter(tmp_path / "a", set_active=True)
    with torch.no_grad():
        bare, want, got = source(**batch, head="a").logits, source(**batch, adapter_setup="a").logits, half(**batch).logits
    assert got.dtype == torch.bfloat16  # within a tenth of what the adapter changes (measured: 0.4-2.4%)
    assert (got.float() - want).abs().max().item() <= 0.1 * (want - bare).abs().max().item()
    half.train_adapter("a")
    half(**batch, labels=torch.tensor([0, 1])).loss.backward()
    grads = [p.grad for p in half.parameters() if p.requires_grad and p.grad is not None]
    assert len(grads) >= 2 and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("family", [*CONFIGS, *SEQ2SEQ])
def test_save_then_load_reproduces_outputs_and_greedy_generation_with_a_fresh_adapter_is_the_bare_models(
        family, tmp_path):
    model = causal_lm(family)
    batch = prompts(family)
    generate = dict(attention_mask=batch["attention_mask"], max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        bare = model.generate(batch["input_ids"], **generate)
    for name in ("houlsby", "lora"):
        model.add_adapter(name, METHODS[name])
        with torch.no_grad(), model.adapter_setup(name, head="default"):
            assert torch.equal(model.generate(batch["input_ids"], **generate), bare), name
        perturb(model, f".{name}.", std=0.3)
        model.save_adapter(tmp_path / name, name)
    fresh = causal_lm(family)
    for name in ("houlsby", "lora"):
        assert fresh.load_adapter(tmp_path / name) == name
        assert torch.equal(logits(fresh, name), logits(model, name))
        assert not torch.equal(logits(fresh, name), logits(fresh))


def _gpt2_reference():
    return load_file(GPT2 / "reference_outputs.safetensors")


def run(model, ref, setup=None, head="default"):
    with torch.no_grad(), model.adapter_setup(setup, head=head):
        return model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])


def close(a, b):
    assert (a - b).abs().max().item() <= TOL


@pytest.mark.parametrize("folder", ["safetensors", "bin"])
def test_gpt2_adapters_heads_and_generation_follow_adapterhub(folder):
    """Bottlenecks after attention and the MLP (AdapterHub's GPT-2 mixin), LoRA on the q | k | v
    slices of the fused Conv1D c_attn and on c_fc / c_proj, IA3 on k | v and c_fc, AdapterHub's
    weight names, its own LM head, and greedy generation with the KV cache."""
    ref = _gpt2_reference()
    model = AdapterModel.from_pretrained(GPT2 / "backbone").eval()
    close(run(model, ref).logits, ref["base.logits"])
    for name in ("sb", "dsb", "lora", "ia3"):
        model.load_adapter(GPT2 / folder / name, with_head=False)
        out = run(model, ref, name)
        close(out.hidden_states, ref[f"{name}.hidden"])
        close(out.logits, ref[f"{name}.logits"])
    assert model.adapters_config["lora"].attn_matrices == ("q", "k", "v")
    model.load_adapter(GPT2 / folder / "sb", load_as="sb_head")
    close(run(model, ref, "sb_head", head=None).logits, ref["sb.head_logits"])
    for name in ("base", "sb", "lora"):
        with torch.no_grad(), model.adapter_setup(None if name == "base" else name, head="default"):
            tokens = model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=6,
                                    min_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        assert torch.equal(tokens, ref[f"generate.{name}.cache"]), name


def test_gpt2_lora_merges_into_the_conv1d_and_saves_with_adapterhubs_names(tmp_path):
    ref = _gpt2_reference()
    model = AdapterModel.from_pretrained(GPT2 / "backbone").eval()
    original = model.backbone.h[0].attn.c_attn.weight.clone()
    for name in ("lora", "ia3"):
        model.load_adapter(GPT2 / "safetensors" / name, set_active=True, with_head=False)
        model.active_head = "default"
        model.merge_adapter(name)
        close(run(model, ref, None).logits, ref[f"{name}.logits"])
        model.reset_adapter()
        close(model.backbone.h[0].attn.c_attn.weight, original)
    model.save_adapter(tmp_path / "lora", "lora")
    ours, theirs = (load_file(p / "adapter.safetensors") for p in (tmp_path / "lora", GPT2 / "safetensors" / "lora"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # q and v only: their slices of c_attn's output change, k's does not
    model.add_adapter("qv", {"architecture": "lora", "attn_matrices": ["q", "v"]})
    c_attn = model.backbone.h[0].attn.c_attn
    lora = c_attn.loras["qv"]
    assert tuple(lora.lora_A.shape) == (16, 32) and tuple(lora.lora_B.shape) == (64, 8)
    perturb(model, ".qv.", std=0.5)
    seen = []
    c_attn.register_forward_hook(lambda m, args, out: seen.append(out))
    run(model, ref, None)
    run(model, ref, "qv")
    changed = [(seen[0][..., s * 32:(s + 1) * 32] - seen[1][..., s * 32:(s + 1) * 32]).abs().max().item()
               for s in range(3)]
    assert changed[0] > 1e-3 and changed[1] == 0 and changed[2] > 1e-3


@pytest.mark.parametrize("family, tied", [("gpt2", True), ("llama", False)])
def test_a_new_lm_head_is_tied_to_the_input_embeddings_when_the_config_ties_them(family, tied):
    model = causal_lm(family)
    head = model.add_head("lm", "causal_lm")
    embeddings = model.backbone.get_input_embeddings().weight
    assert (head[-1].weight is embeddings) == tied
    model.add_adapter("lm", "pfeiffer")
    model.train_adapter("lm")
    assert not embeddings.requires_grad  # a tied head does not train the embeddings (AdapterHub's rule)
    assert head[-1].weight.requires_grad != tied


@pytest.mark.parametrize("family", ["t5", "bart", "mbart"])
def test_encoder_decoder_adapters_heads_and_generation_follow_adapterhub(family):
    """Bottlenecks in both stacks (T5 in its sub-layer modules, BART post-LN, mBART pre-LN) and
    after the decoder's cross-attention (``cross_adapter``), LoRA
    and IA3 in self- and cross-attention and the feed-forward, the seq2seq_lm heads (T5's scaled
    input), greedy generation with the KV cache."""
    ref = load_file(FIXTURES / family / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(FIXTURES / family / "backbone").eval()
    assert model.active_head == "default" and model.heads["default"].config["head_type"] == "seq2seq_lm"
    inputs = {k: ref[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}

    def run(setup, head="default"):
        with torch.no_grad(), model.adapter_setup(setup, head=head):
            return model(**inputs)

    close(run(None).logits, ref["base.logits"])
    for name in ("sb", "dsb", "xdsb", "lora", "ia3"):  # xdsb: double_seq_bn with cross_adapter=True
        model.load_adapter(FIXTURES / family / "safetensors" / name, with_head=False)
        out = run(name)
        close(out.hidden_states, ref[f"{name}.hidden"])
        close(out.logits, ref[f"{name}.logits"])
    model.load_adapter(FIXTURES / family / "bin" / "sb", load_as="sb_head")
    close(run("sb_head", head=None).logits, ref["sb.head_logits"])
    pad = 0 if family == "t5" else 1
    for name in ("base", "sb", "lora"):
        with torch.no_grad(), model.adapter_setup(None if name == "base" else name, head="default"):
            tokens = model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=6,
                                    min_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=pad)
        assert torch.equal(tokens, ref[f"generate.{name}.cache"]), name


def test_t5_v1_1s_gated_feed_forward_takes_intermediate_lora_on_wi_1_as_adapterhub():
    model = causal_lm("t5_v1_1")
    model.add_adapter("lora", METHODS["lora"])
    adapted = {n.split(".lora")[0] for n, _ in model.named_parameters() if "DenseReluDense" in n and ".lora" in n}
    stacks = (("encoder", 1), ("decoder", 2))  # the feed-forward sub-layer's index in each
    assert adapted == {f"transformer.{stack}.block.{i}.layer.{ff}.DenseReluDense.{w}"
                       for stack, ff in stacks for i in range(2) for w in ("wi_1", "wo")}


def test_a_cross_adapter_alone_needs_cross_attention():
    model = causal_lm("llama")
    with pytest.raises(AdapterConfigError, match="llama has none: set mh_adapter=True or output_adapter=True"):
        model.add_adapter("x", {"architecture": None, "mh_adapter": False, "output_adapter": False,
                                "cross_adapter": True, "reduction_factor": 16, "non_linearity": "relu"})
    assert "x" not in model.adapters_config


def test_gpt_neox_lora_adapts_the_slices_of_each_head_in_its_fused_projection():
    """GPT-NeoX lays query_key_value out per head (q_h | k_h | v_h): a LoRA on q changes the
    first third of every head's columns and nothing else."""
    model = causal_lm("gpt_neox")
    model.add_adapter("q", {"architecture": "lora", "attn_matrices": ["q"]})
    perturb(model, ".q.", std=0.5)
    projection = model.backbone.layers[0].attention.query_key_value
    seen = []
    projection.register_forward_hook(lambda m, args, out: seen.append(out.view(*out.shape[:2], 4, 3, 8)))
    logits(model)
    logits(model, "q")
    changed = (seen[0] - seen[1]).abs().amax(dim=(0, 1, 4))  # (head, q/k/v)
    assert (changed[:, 0] > 1e-3).all() and (changed[:, 1:] == 0).all()


@pytest.mark.parametrize("family", ["t5", "bart", "mbart"])
def test_decoder_inputs_from_labels_are_transformers_own(family):
    from adapterctl.heads.language_modeling import decoder_inputs

    torch.manual_seed(0)
    checkpoint = AutoModelForSeq2SeqLM.from_config(SEQ2SEQ[family]())
    labels = torch.randint(3, 99, (2, 6), generator=torch.Generator().manual_seed(5))
    labels[1, 4:] = -100
    assert torch.equal(decoder_inputs(labels, checkpoint.config), checkpoint.prepare_decoder_input_ids_from_labels(labels))


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_invertible_adapters_of_encoder_decoders_act_on_the_encoders_embeddings_only(family):
    """The embeddings are shared by both stacks; AdapterHub runs the invertible block in the
    encoder only (T5: after its embeddings, BART/mBART: after their normalization)."""
    model = causal_lm(family)
    model.add_adapter("inv", "pfeiffer+inv", set_active=True)
    calls = []
    model.backbone.encoder.invertible_adapters["inv"].register_forward_hook(
        lambda m, args, kwargs, out: calls.append((args[0].shape, kwargs.get("rev", False))), with_kwargs=True)
    logits(model, "inv")
    # the encoder's batch, not the decoder's (2, 4); then the LM head's inverse on the decoder's output
    assert calls == [(torch.Size([2, 7, 32]), False), (torch.Size([2, 4, 32]), True)]


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_invertible_adapters_of_encoder_decoders_load_by_adapterhubs_names_and_invert_before_the_lm_head(family):
    """AdapterHub keeps them at ``<prefix>.encoder.invertible_adapters.<name>`` and runs the block's
    inverse before the seq2seq head's vocabulary projection (make_inv.py: its logits); generate()
    runs the inverse too."""
    ref = load_file(FIXTURES / family / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(FIXTURES / family / "backbone").eval()
    name = model.load_adapter(FIXTURES / family / "inv", with_head=False, set_active=True)
    assert name == "inv" and "inv" in model.backbone.encoder.invertible_adapters
    inputs = {k: ref[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
    with torch.no_grad():
        close(model(**inputs).logits, load_file(FIXTURES / family / "inv_reference.safetensors")["logits"])
    calls = []
    model.backbone.encoder.invertible_adapters["inv"].register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs.get("rev", False)), with_kwargs=True)
    with torch.no_grad():
        model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=3, min_new_tokens=3,
                       do_sample=False, pad_token_id=0 if family == "t5" else 1)
    assert calls == [False, True, True, True]  # the encoder once, the inverse at each new token
