"""DoRA and VeRA (AdapterHub's ``dora`` and ``vera`` presets of ``LoRAConfig``; counts in test_lora.py): names,
identity at init, freezing, save/load, merging (right also where AdapterHub's is not), and the
outputs of AdapterHub's own adapters (tests/fixtures/adapterhub_methods)."""

import contextlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterConfigError, AdapterModel, Stack
from adapterctl.core import composer
from adapterctl.methods.lora.layer import LoRAState
from conftest import batch, perturb, tiny_llama, tiny_model

METHODS = Path(__file__).parent / "fixtures" / "adapterhub_methods"


def hidden(model, inputs, setup=None):
    """With ``setup``, else with the model's active adapters."""
    with torch.no_grad(), model.adapter_setup(setup) if setup else contextlib.nullcontext():
        return model(**inputs).hidden_states


@pytest.mark.parametrize("family, preset", [("bert", "dora"), ("llama", "dora"), ("bert", "vera"), ("llama", "vera"),
                                            ("bert", "dvora")])
def test_fresh_adapter_is_an_identity_then_merge_and_reset_keep_outputs(family, preset):
    model, inputs = (tiny_model() if family == "bert" else tiny_llama()), batch()
    bare = hidden(model, inputs)
    model.add_adapter("a", preset, intermediate_lora=True, set_active=True)  # VeRA: A and B cut per projection
    assert (hidden(model, inputs) - bare).abs().max().item() <= 1e-5
    perturb(model, ".loras.a.", std=0.3)
    weights = {n: p.clone() for n, p in model.backbone.named_parameters() if ".loras." not in n}
    trained = hidden(model, inputs)
    assert (trained - bare).abs().max().item() > 1e-3
    model.merge_adapter("a")
    assert (hidden(model, inputs) - trained).abs().max().item() <= 1e-5
    with pytest.raises(AdapterConfigError, match="merged into the weights"):
        model.train_adapter("a")
    model.reset_adapter()
    after = dict(model.backbone.named_parameters())
    assert all((after[n] - w).abs().max().item() <= 1e-5 for n, w in weights.items())
    assert (hidden(model, inputs) - trained).abs().max().item() <= 1e-5


def test_training_vera_keeps_its_shared_matrices_frozen():
    model = tiny_model()
    model.add_adapter("v", "vera")
    model.add_head("v", num_labels=2)
    model.train_adapter("v")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.rsplit(".", 1)[-1] for n in trainable if ".loras." in n} == {"vera_D", "vera_B"}
    assert not any("shared_parameters" in n for n in trainable)
    shared = {n: p.clone() for n, p in model.named_parameters() if "shared_parameters" in n}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch(), labels=torch.tensor([0, 1, 1])).loss.backward()
    opt.step()
    assert all(torch.equal(p, shared[n]) for n, p in model.named_parameters() if n in shared)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if n.endswith("vera_B"))


@pytest.mark.parametrize("preset", ["dora", "vera"])
def test_save_load_reproduces_outputs(tmp_path, preset):
    model, inputs = tiny_model(), batch()
    model.add_adapter("a", preset)
    perturb(model, ".a.", std=0.3)
    expected = hidden(model, inputs, "a")
    model.save_adapter(tmp_path / "a", "a")
    fresh = tiny_model()
    fresh.load_adapter(tmp_path / "a", load_as="b")
    assert torch.equal(hidden(fresh, inputs, "b"), expected)


def test_bad_dora_and_vera_configs_are_one_line_errors():
    model = tiny_model()
    for overrides, message in [
        (dict(vera_d=0.1), "needs both vera_d and vera_b"),
        (dict(vera_d="big", vera_b=0.0), r"vera_d=.big. must be a number"),
        (dict(use_dora="yes"), r"use_dora=.yes. must be true or false"),
    ]:
        with pytest.raises(AdapterConfigError, match=message):
            model.add_adapter("x", "lora", **overrides)
    with pytest.raises(AdapterConfigError, match="IA3 .scale. takes neither"):
        model.add_adapter("x", "ia3", use_dora=True)
    assert "x" not in model.adapters_config and not any(".x." in k for k in model.state_dict())


@pytest.mark.parametrize("name", ["dora", "vera"])
@pytest.mark.parametrize("files", ["safetensors", "bin"])
def test_their_adapters_give_their_outputs_and_merge_right(name, files):
    """AdapterHub's DoRA merge changes its outputs (2.3e-3 here: it leaves the bias and the
    scaling out); ours keeps the unmerged ones, and reset restores the weights."""
    ref = load_file(METHODS / "reference_outputs.safetensors")
    inputs = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    model.load_adapter(METHODS / files / name, set_active=True)
    with torch.no_grad():
        out = model(**inputs)
    assert (out.hidden_states - ref[f"{name}.hidden"]).abs().max().item() <= 1e-5
    assert (out.logits - ref[f"{name}.logits"]).abs().max().item() <= 1e-5
    model.merge_adapter(name)
    with torch.no_grad():
        assert (model(**inputs).logits - ref[f"{name}.logits"]).abs().max().item() <= 1e-5
    model.reset_adapter()
    assert (hidden(model, inputs) - ref[f"{name}.hidden"]).abs().max().item() <= 1e-5


def test_stacked_dora_follows_adapterhubs_combine():
    """In a Stack the last adapter's magnitude rescales the projection's output plus the
    stacked update (AdapterHub's LoRALinear.forward)."""
    model = tiny_model()
    model.add_adapter("a", "lora")
    model.add_adapter("d", "dora")
    perturb(model, ".loras.", std=0.3)
    layer = model._method("lora").layers["encoder", 0, "q"]
    x = torch.randn(2, 3, 32)
    a, d, linear = layer.loras["a"], layer.loras["d"], layer.linear
    with torch.no_grad():
        update = d.scaling * (x @ a.delta_w.t() * a.scaling) @ d.delta_w.t()
        expected = d.dora_scale(linear.weight) * (linear(x) + update)
        final = composer.compose(layer, Stack("a", "d"), LoRAState(x, None, linear(x), None))
        got = layer.loras[final.last].combine(linear(x), final.hidden, linear)
    torch.testing.assert_close(got, expected)
