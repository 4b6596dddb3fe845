"""Compacter (PHM layers), gated and stochastic-depth bottlenecks, and AdapterPlus: AdapterHub's
counts, names and recorded outputs (tests/fixtures/adapterhub_methods, FACTS.md), identity at
init, training, save/load, and the errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig

from adapterctl import AdapterConfigError, AdapterModel, BnConfig
from adapterctl.core.config import load_config
from adapterctl.methods.bottleneck.layer import Bottleneck
from adapterctl.methods.bottleneck.phm import PHMLayer, PHMShared
from clitools import adapterctl, make_tiny_bert, quick
from conftest import DATA, batch, perturb, tiny_llama, tiny_model

METHODS = Path(__file__).parent / "fixtures" / "adapterhub_methods"
THEIRS = ["compacter", "ppcompacter", "adapterplus"]  # CompacterConfig, CompacterPlusPlusConfig (rf 8), AdapterPlusConfig


def close(a, b, tol=1e-5):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol


def outputs(model, inputs, setup):
    with torch.no_grad(), model.adapter_setup(setup):
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])


def bert_base_shape() -> AdapterModel:
    """A bert-base-sized model without values (counts need none), as param_counts.json's."""
    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        vocab_size=8, max_position_embeddings=8)
    with torch.device("meta"):
        return AdapterModel(AutoModel.from_config(config))


def test_parameter_counts_follow_adapterhub():
    model = bert_base_shape()
    for preset in ("compacter", "compacter++", "adapterplus"):
        model.add_adapter(preset.replace("+", "p"), preset)
    rows = {row["name"]: (row["method"], row["params"]) for row in model.adapter_summary(as_dict=True)}
    expected = json.loads((METHODS / "param_counts.json").read_text())
    assert rows == {"compacter": ("compacter", 57_088), "compacterpp": ("compacter++", 28_576),
                    "adapterplus": ("adapterplus", 165_984)}
    assert [expected[k]["params"] for k in ("compacter", "compacter++", "adapterplus")] == [57_088, 28_576, 165_984]


@pytest.fixture(scope="module")
def reference():
    return load_file(METHODS / "reference_outputs.safetensors")


@pytest.mark.parametrize("form", ["safetensors", "bin"])
def test_their_files_give_their_outputs_and_ours_keep_their_names(reference, form, tmp_path):
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    for name in THEIRS:
        model.load_adapter(METHODS / form / name)
        out = outputs(model, reference, name)
        close(out.hidden_states, reference[f"{name}.hidden"])
        close(out.logits, reference[f"{name}.logits"])
    if form == "bin":
        return
    fresh = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    for name in THEIRS:
        model.save_adapter(tmp_path / name, name)
        ours, theirs = (load_file(folder / name / "adapter.safetensors") for folder in (tmp_path, METHODS / form))
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
        saved = json.loads((tmp_path / name / "adapter_config.json").read_text())["config"]
        assert saved == json.loads((METHODS / form / name / "adapter_config.json").read_text())["config"]
        fresh.load_adapter(tmp_path / name)
        close(outputs(fresh, reference, name).logits, reference[f"{name}.logits"])


def test_the_phm_weight_is_a_sum_of_kronecker_products():
    config = BnConfig(mh_adapter=False, output_adapter=True, reduction_factor=2, non_linearity="relu", phm_layer=True,
                      shared_phm_rule=False, phm_rank=2)
    layer = PHMLayer(config, 8, 12, "down", None)
    layer.init_(torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.b.normal_()
    w = torch.bmm(layer.W_left, layer.W_right)
    expected = sum(torch.kron(layer.phm_rule[i], w[i]) for i in range(4))
    x = torch.randn(3, 5, 8)
    close(layer(x), x @ expected + layer.b, 1e-6)
    assert {n for n, _ in layer.named_parameters()} == {"phm_rule", "W_left", "W_right", "b"}


@pytest.mark.parametrize("variant", [
    {}, {"shared_phm_rule": False}, {"factorized_phm_rule": True}, {"shared_W_phm": True},
    {"factorized_phm_W": False, "learn_phm": False}, {"phm_dim": 2, "phm_rank": 3, "phm_bias": False},
], ids=["default", "own-rule", "factorized-rule", "shared-W", "full-W-fixed-rule", "dim2-rank3-nobias"])
def test_a_fresh_compacter_is_an_identity_trains_and_reloads(variant, tmp_path):
    model = tiny_model()
    inputs = batch()
    with torch.no_grad():
        base = model(**inputs).hidden_states
    model.add_adapter("c", "compacter", reduction_factor=4, **variant)
    close(outputs(model, inputs, "c").hidden_states, base, 0.0)
    model.train_adapter("c")
    loss = model(**inputs).hidden_states.pow(2).mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(".c." in n for n in grads)
    up_factor = "W_up_right" if variant.get("shared_W_phm") else "adapter_up.W_right" if \
        variant.get("factorized_phm_W", True) else "adapter_up.W"
    assert any(up_factor in n and g.abs().sum() > 0 for n, g in grads.items())
    rules = [n for n in model.state_dict() if ".c." in n and "phm_rule" in n]
    assert rules and all(n in grads for n in rules) == variant.get("learn_phm", True)
    reloads_trained(model, "c", inputs, base, tmp_path, std=1.0)  # PHM weights: products of three factors


def reloads_trained(model, name, inputs, base, folder, std=0.1) -> AdapterModel:
    """Perturb the adapter (a trained one), check it acts, and that its saved folder gives a fresh
    model the same outputs; returns that model."""
    perturb(model, f".{name}.", std=std)
    model.eval()
    trained = outputs(model, inputs, name).hidden_states
    assert (trained - base).abs().max() > 1e-3
    model.save_adapter(folder / name, name)
    fresh = tiny_model()
    fresh.load_adapter(folder / name)
    close(outputs(fresh, inputs, name).hidden_states, trained, 0.0)
    return fresh


@pytest.mark.parametrize("family", ["distilbert", "llama"])
def test_compacters_are_identities_in_other_families(family):
    model = tiny_llama() if family == "llama" else tiny_model(family)
    inputs = batch()
    with torch.no_grad():
        base = model(**inputs).hidden_states
        for preset in ("compacter", "compacter++"):
            model.add_adapter(preset, preset, reduction_factor=4)
            close(outputs(model, inputs, preset).hidden_states, base, 1e-6)


def test_a_gated_adapter_scales_its_output_by_the_mean_gate():
    config = load_config("seq_bn", use_gating=True, reduction_factor=4)
    adapter = Bottleneck(config, 32, 8).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    h, residual = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    gate = torch.sigmoid(h @ adapter.gate.weight.t() + adapter.gate.bias).mean(dim=1, keepdim=True)  # (2, 1, 1)
    out, up = adapter(h, residual)
    close(out, adapter.adapter_up(adapter.adapter_down(h)) * gate + residual, 1e-6)
    assert not adapter.fusable
    assert dict(adapter.gate.named_parameters())["weight"].shape == (1, 32)


def test_stochastic_depth_drops_whole_rows_in_training_only():
    config = load_config("seq_bn", stochastic_depth=0.5, reduction_factor=4)
    torch.manual_seed(0)
    adapter = Bottleneck(config, 32, 8)
    with torch.no_grad():
        adapter.adapter_up.weight.normal_()
    h, residual = torch.randn(64, 3, 32), torch.zeros(64, 3, 32)
    kept = adapter.eval()(h, residual)[0]
    dropped = adapter.train()(h, residual)[0]
    zero = dropped.abs().amax(dim=(1, 2)) == 0
    assert 10 < zero.sum() < 54  # each row dropped with p = 0.5
    close(dropped[~zero], 2 * kept[~zero], 1e-5)  # the kept rows scaled by 1 / (1 - p)


@pytest.mark.parametrize("change, message", [
    ({"reduction_factor": 3}, r"multiples of phm_dim=4"),
    ({"init_weights": "houlsby"}, r"init_weights='houlsby' does not apply to PHM layers"),
    ({"hypercomplex_nonlinearity": "glorot"}, r"unknown hypercomplex_nonlinearity 'glorot'"),
    ({"phm_dim": 0}, r"phm_dim must be an integer >= 1"),
    ({"stochastic_depth": 1.0}, r"stochastic_depth must be in \[0, 1\)"),
    ({"shared_W_phm": True, "reduction_factor": {"default": 4}}, r"shared_W_phm=True .* one reduction_factor"),
])
def test_bad_compacter_settings_are_one_line_errors(change, message):
    model = tiny_model()
    with pytest.raises(AdapterConfigError, match=message):
        model.add_adapter("c", "compacter", **change)
    assert not model.adapters_config and not any("shared_parameters" in k for k in model.state_dict())


def test_delete_removes_the_shared_tensors():
    model = tiny_model()
    model.add_adapter("c", "compacter++", reduction_factor=4)
    assert isinstance(model.backbone.shared_parameters["c"], PHMShared)
    model.delete_adapter("c")
    assert "c" not in model.backbone.shared_parameters
    assert not any(".c." in k for k in model.state_dict())


def test_train_compacter_through_the_cli(tmp_path):
    """``adapter=compacter++`` with a field overridden trains, saves AdapterHub's config and evaluates."""
    backbone = make_tiny_bert(tmp_path / "tiny")
    adapterctl("train", *quick(backbone, steps=3), f"data_root={DATA}", "adapter=compacter++",
               "adapter.reduction_factor=4", "adapter.phm_dim=2", "output_dir=run", cwd=tmp_path)
    saved = json.loads((tmp_path / "run" / "adapters" / "rotten_tomatoes" / "adapter_config.json").read_text())
    assert saved["config"]["phm_layer"] and saved["config"]["phm_dim"] == 2 and saved["config"]["reduction_factor"] == 4
    weights = load_file(tmp_path / "run" / "adapters" / "rotten_tomatoes" / "adapter.safetensors")
    assert "bert.shared_parameters.rotten_tomatoes.phm_rule" in weights
    adapterctl("evaluate", "run=run", cwd=tmp_path)
