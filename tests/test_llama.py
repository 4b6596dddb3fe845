"""The Llama family (and Mistral, Qwen2, which share its layout): bottleneck adapters where
AdapterHub's Llama mixin puts them, the checkpoint's heads kept, generation unchanged by a
fresh adapter."""

import pytest
import torch
from transformers import AutoModel, LlamaForSequenceClassification, MistralConfig, Qwen2Config

from adapterctl import AdapterConfigError, AdapterModel, UnsupportedModelError
from conftest import batch, llama_config, perturb, tiny_llama, tiny_model


def _by_hand(site_key, adapter):
    """A bare tiny Llama whose sub-layer output ``h`` at ``site_key`` becomes what AdapterHub's
    bottleneck layer computes with ``layer_norm=None``: pre step (``h + x`` if
    original_ln_before, residual ``h``), ``up(act(down(.))) + residual``, post step (``+ x``,
    which the layer's own inline add supplies)."""
    torch.manual_seed(0)
    bare = AutoModel.from_config(llama_config()).eval()  # tiny_llama's weights
    norm, sub = ("input_layernorm", "self_attn") if site_key == "mh_adapter" else ("post_attention_layernorm", "mlp")
    captured = {}
    for idx, layer in enumerate(bare.layers):
        layer.get_submodule(norm).register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))

        def replace(m, args, out, idx=idx):
            h = out[0] if isinstance(out, tuple) else out
            module = adapter(idx)
            inner = h + captured["x"] if module.config.original_ln_before else h
            value = module.adapter_up(module.adapter_down(inner)) + h
            return (value, *out[1:]) if isinstance(out, tuple) else value

        layer.get_submodule(sub).register_forward_hook(replace)
    with torch.no_grad():
        return bare(**batch()).last_hidden_state


@pytest.mark.parametrize("preset, site", [("pfeiffer", "output_adapter"), ("houlsby", "mh_adapter"),
                                          ("houlsby", "output_adapter")])
def test_bottleneck_adapters_sit_where_adapterhubs_llama_mixin_puts_them(preset, site):
    model = tiny_llama()
    model.add_adapter("a", preset, set_active=True)
    container = "attention_adapters" if site == "mh_adapter" else "output_adapters"
    keys = {k for k in model.state_dict() if ".adapters.a." in k}
    assert f"model.layers.1.{container}.adapters.a.adapter_up.weight" in keys
    assert any(".attention_adapters." in k for k in keys) == (preset == "houlsby")
    perturb(model, f".{container}.adapters.a.", std=0.2)  # this site only; the other stays an identity
    with torch.no_grad():
        ours = model(**batch()).hidden_states
    expected = _by_hand(site, lambda i: getattr(model.backbone.layers[i], container).adapters["a"])
    assert (ours - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("preset", ["pfeiffer", "lora"])
def test_greedy_generation_with_a_fresh_adapter_equals_the_bare_models(preset):
    model = tiny_llama(causal_lm=True)
    assert list(model.heads) == ["default"] and model.active_head == "default"
    prompt = batch(rows=2, length=6)["input_ids"]
    with torch.no_grad():
        bare = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
        model.add_adapter("a", preset, set_active=True)
        assert model.active_head == "default"
        fresh = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
        perturb(model, ".a.", std=0.5)
        trained = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    assert bare.shape == (2, 14) and torch.equal(fresh, bare)
    assert not torch.equal(trained, bare)  # the adapter really runs in generation


def test_the_checkpoints_heads_are_kept_and_classification_pools_the_last_real_token():
    torch.manual_seed(0)
    config = llama_config()
    config.num_labels, config.pad_token_id = 3, 1
    checkpoint = LlamaForSequenceClassification(config).eval()
    model = AdapterModel(checkpoint).eval()
    assert model.heads["default"].config["head_type"] == "classification" and model.active_head == "default"
    right = batch()  # padded on the right with id 1
    mask = right["attention_mask"].flip(-1)  # the same lengths padded on the left
    with torch.no_grad():
        assert torch.allclose(model(**right).logits, checkpoint(**right).logits, atol=1e-6)
        out = model(input_ids=right["input_ids"], attention_mask=mask)
        assert torch.equal(out.logits, model.heads["default"].project(out.hidden_states[:, -1]))


@pytest.mark.parametrize("config_class", [MistralConfig, Qwen2Config])
def test_families_that_share_llamas_layout_are_one_entry(config_class):
    torch.manual_seed(0)
    config = config_class(**{k: getattr(llama_config(), k) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "vocab_size")})
    backbone = AutoModel.from_config(config).eval()
    with torch.no_grad():
        bare = backbone(**batch()).last_hidden_state
        model = AdapterModel(backbone)
        model.add_adapter("b", "houlsby")
        model.add_adapter("l", "ia3")
        for name in ("b", "l"):
            model.set_active_adapters(name)
            assert (model(**batch()).hidden_states - bare).abs().max() <= 1e-6


def test_a_family_without_an_entry_lists_the_supported_ones():
    from transformers import BloomConfig

    with pytest.raises(UnsupportedModelError, match="'bloom' is not supported; adapterctl supports bart, bert.*gpt2.*t5"):
        AdapterModel(AutoModel.from_config(BloomConfig(hidden_size=32, n_layer=1, n_head=4, vocab_size=99)))


def test_generation_needs_a_decoder_with_a_causal_lm_head():
    prompt = batch(rows=1)["input_ids"]
    with pytest.raises(AdapterConfigError, match="generate\\(\\) needs a decoder"):
        tiny_model().generate(prompt)
    model = tiny_llama()
    model.add_head("cls", num_labels=2)
    with pytest.raises(AdapterConfigError, match="needs an active one-layer causal_lm head, and the active head is 'cls"):
        model.generate(prompt)
