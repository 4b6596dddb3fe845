"""LoRA and IA3: AdapterHub's counts and names, identity at init, freezing, save/load, merging,
and every composition block they support against references computed by hand."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BertConfig

from adapterctl import (AdapterConfigError, AdapterModel, Average, BatchSplit, IncompatibleAdapterError, Parallel,
                        Split, Stack)
from conftest import batch, perturb, tiny_backbone, tiny_llama, tiny_model

ADAPTED = ("attention.self.query", "attention.self.value")  # lora's default attn_matrices: q, v


def test_parameter_counts_follow_adapterhub():
    """AdapterHub's counts on bert-base (tests/fixtures/adapterhub_methods/param_counts.json)."""
    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        vocab_size=8, max_position_embeddings=8)
    expected = {"lora": 294_912, "ia3": 55_296, "dora": 313_344, "vera": 14_169_600}
    with torch.device("meta"):  # shapes only
        model = AdapterModel(AutoModel.from_config(config))
        for preset in expected:
            model.add_adapter(preset, preset)
    rows = model.adapter_summary(as_dict=True)[: len(expected)]
    assert {r["name"]: (r["method"], r["params"]) for r in rows} == {p: (p, n) for p, n in expected.items()}


def test_weight_names_and_saved_config_are_adapterhubs(tmp_path):
    model = tiny_model()
    for name in ("lora", "ia3", "dora", "vera"):
        model.add_adapter(name, name)
    keys = set(model.state_dict())
    assert {"bert.encoder.layer.1.attention.self.query.loras.lora.lora_A",
            "bert.encoder.layer.1.attention.self.value.loras.lora.lora_B",
            "bert.encoder.layer.0.attention.self.key.loras.ia3.lora_B",
            "bert.encoder.layer.0.intermediate.dense.loras.ia3.lora_B",
            "bert.encoder.layer.0.attention.self.query.loras.dora.m.weight",
            "bert.encoder.layer.1.attention.self.value.loras.vera.vera_D",
            "bert.encoder.layer.1.attention.self.value.loras.vera.vera_B",
            "bert.shared_parameters.vera.lora_A", "bert.shared_parameters.vera.lora_B"} <= keys
    assert "bert.encoder.layer.0.attention.self.key.loras.ia3.lora_A" not in keys  # IA3 is a vector
    assert "bert.encoder.layer.0.attention.self.query.loras.vera.lora_A" not in keys  # VeRA's A is shared
    theirs = json.loads((Path(__file__).parent / "fixtures" / "adapterhub_methods" / "configs.json").read_text())
    for name in ("lora", "ia3", "dora", "vera"):
        model.save_adapter(tmp_path / name, name)
        assert json.loads((tmp_path / name / "adapter_config.json").read_text())["config"] == theirs[name]["config"]
    model.delete_adapter("vera")
    assert not any("shared_parameters" in k for k in model.state_dict())


@pytest.mark.parametrize("make", [tiny_model, tiny_llama], ids=["bert", "llama"])
@pytest.mark.parametrize("preset", ["lora", "ia3"])
def test_fresh_adapter_is_an_identity_and_a_trained_one_is_not(make, preset):
    model, inputs = make(), batch()
    with torch.no_grad():
        bare = model(**inputs).hidden_states
        model.add_adapter("a", preset, intermediate_lora=True, output_lora=True, set_active=True)
        assert (model(**inputs).hidden_states - bare).abs().max().item() <= 1e-6
        perturb(model, ".loras.a.")
        assert (model(**inputs).hidden_states - bare).abs().max().item() > 1e-3


@pytest.mark.parametrize("make", [tiny_model, tiny_llama], ids=["bert", "llama"])
def test_train_adapter_trains_only_the_adapter_and_its_head(make):
    model = make()
    model.add_adapter("a", "lora")
    model.add_adapter("other", "ia3")
    model.add_head("a", num_labels=2)
    model.train_adapter("a")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".loras.a." in n or n.startswith("heads.a.") for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch(), labels=torch.tensor([0, 1, 1])).loss.backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("make", [tiny_model, tiny_llama], ids=["bert", "llama"])
@pytest.mark.parametrize("preset", ["lora", "ia3"])
def test_save_load_reproduces_logits_and_merge_reset_round_trips(tmp_path, make, preset):
    model, inputs = make(), batch()
    model.add_adapter("a", preset, set_active=True)
    model.add_head("a", num_labels=3)
    perturb(model, ".loras.a.", std=0.3)
    with torch.no_grad():
        logits = model(**inputs).logits
    model.save_adapter(tmp_path / "a", "a")
    fresh = make()
    fresh.load_adapter(tmp_path / "a", set_active=True)
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, logits)
        projections = [m for m in fresh.modules() if hasattr(m, "loras")]
        weights = [p.detach().clone() for m in projections for p in (m.weight, m.bias) if p is not None]
        fresh.merge_adapter("a")
        assert all(not m._forward_hooks for m in projections)  # nothing of the adapter left on the hot path
        assert (fresh(**inputs).logits - logits).abs().max().item() <= 1e-5
        fresh.reset_adapter()
        restored = [p for m in projections for p in (m.weight, m.bias) if p is not None]
        assert max((a - b).abs().max().item() for a, b in zip(weights, restored)) <= 1e-6
        assert (fresh(**inputs).logits - logits).abs().max().item() <= 1e-5
    assert all(len(m._forward_hooks) == 1 for m in projections)


def test_merged_weights_are_refused_for_training_and_bottlenecks_cannot_merge():
    model = tiny_model()
    model.add_adapter("a", "lora")
    model.add_adapter("b", "pfeiffer")
    with pytest.raises(AdapterConfigError, match="'b' is a bottleneck adapter, which cannot be merged.*can: lora"):
        model.merge_adapter("b")
    model.merge_adapter("a")
    with pytest.raises(AdapterConfigError, match=r"merged into the weights \(a\); call reset_adapter\(\)"):
        model.train_adapter("a")
    model.add_adapter("g", "lora", use_gating=True)
    model.reset_adapter()
    with pytest.raises(AdapterConfigError, match="gated LoRA"):
        model.merge_adapter("g")


def _lora_deltas(model, name, idx, path):
    lora = model.backbone.encoder.layer[idx].get_submodule(path).loras[name]
    return lora.scaling * lora.lora_B @ lora.lora_A


def _reference(update):
    """The bare tiny BERT with ``update(layer index, path, linear)`` applied to each adapted projection."""
    ref = tiny_backbone()
    with torch.no_grad():
        for idx, layer in enumerate(ref.encoder.layer):
            for path in ADAPTED:
                update(idx, path, layer.get_submodule(path))
        return ref(**batch()).last_hidden_state


def _two_loras():
    model = tiny_model()
    for name, seed in (("a", 1), ("b", 2)):
        model.add_adapter(name, "lora")
        perturb(model, f".loras.{name}.", std=0.2, seed=seed)
    return model


def _hidden(model, setup):
    with torch.no_grad(), model.adapter_setup(setup):
        return model(**batch()).hidden_states


def test_stack_average_batchsplit_and_parallel_of_loras_follow_adapterhub():
    model = _two_loras()
    d = {(n, i, p): _lora_deltas(model, n, i, p) for n in "ab" for i in (0, 1) for p in ADAPTED}

    def plus(*terms):
        return lambda idx, path, lin: lin.weight.add_(sum(f(idx, path) for f in terms))

    only_a = _reference(plus(lambda i, p: d["a", i, p]))
    only_b = _reference(plus(lambda i, p: d["b", i, p]))
    # Stack: b reads a's update, not the input: W + s_b B_b A_b s_a B_a A_a (AdapterHub's semantics)
    stacked = _reference(plus(lambda i, p: d["b", i, p] @ d["a", i, p]))
    # Average: the weighted mean of the updates (AdapterHub divides once more by the count)
    averaged = _reference(plus(lambda i, p: 0.25 * d["a", i, p] + 0.75 * d["b", i, p]))
    assert (_hidden(model, Stack("a")) - only_a).abs().max() <= 1e-5
    assert (_hidden(model, Stack("a", "b")) - stacked).abs().max() <= 1e-5
    assert (_hidden(model, Average("a", "b", weights=[1, 3])) - averaged).abs().max() <= 1e-5
    split = _hidden(model, BatchSplit("a", "b", batch_sizes=[1, 2]))
    assert (split[:1] - only_a[:1]).abs().max() <= 1e-5 and (split[1:] - only_b[1:]).abs().max() <= 1e-5
    parallel = _hidden(model, Parallel("a", "b"))
    assert parallel.shape[0] == 6
    assert (parallel[:3] - only_a).abs().max() <= 1e-5 and (parallel[3:] - only_b).abs().max() <= 1e-5


def test_a_stack_of_ia3_vectors_multiplies_them():
    model = tiny_model()
    for name, seed in (("x", 1), ("y", 2)):
        model.add_adapter(name, "ia3", intermediate_lora=False, attn_matrices=["q", "v"])
        perturb(model, f".loras.{name}.", std=0.5, seed=seed)

    def scale(idx, path, lin):
        loras = model.backbone.encoder.layer[idx].get_submodule(path).loras
        factor = (loras["x"].lora_B * loras["y"].lora_B).view(-1)
        lin.weight.mul_(factor[:, None])
        lin.bias.mul_(factor)

    assert (_hidden(model, Stack("x", "y")) - _reference(scale)).abs().max() <= 1e-5


def test_parallel_of_a_lora_and_a_bottleneck_runs_each_on_its_copy():
    model = tiny_model()
    model.add_adapter("l", "lora")
    model.add_adapter("p", "pfeiffer")
    perturb(model, ".l.", std=0.2)
    perturb(model, ".adapters.p.", std=0.2, seed=3)
    both = _hidden(model, Parallel("l", "p"))
    assert (both[:3] - _hidden(model, "l")).abs().max() <= 1e-5
    assert (both[3:] - _hidden(model, "p")).abs().max() <= 1e-5


@pytest.mark.parametrize("block", [Parallel("l", "i"), Average("l", "i")], ids=["parallel", "average"])
def test_a_lora_and_an_ia3_joined_at_one_projection_are_refused(block):
    """Both adapt v: the joined branches would get one update, added or multiplied (AdapterHub
    fails here too, with a TypeError)."""
    model = tiny_model()
    model.add_adapter("l", "lora")
    model.add_adapter("i", "ia3")
    with pytest.raises(AdapterConfigError, match="joins 'l', 'i' at one projection, but LoRA adds its update and IA3"):
        _hidden(model, block)


def test_blocks_a_method_cannot_run_are_refused_naming_those_it_supports():
    model = tiny_model()
    model.add_adapter("a", "lora")
    model.add_adapter("b", "lora")
    with pytest.raises(AdapterConfigError, match=r"'a' is a lora adapter, and lora cannot run inside Split .*"
                                                 "lora supports Stack, Parallel, BatchSplit, Average"):
        model.set_active_adapters(Split("a", "b", splits=[4, 5]))
    with pytest.raises(AdapterConfigError, match="cannot run inside Fuse"):
        model.add_fusion(["a", "b"])


def test_projections_the_family_lacks_are_refused():
    model = tiny_llama()
    with pytest.raises(AdapterConfigError, match="llama model has no 'gate' projection.*may name q, k, v, o"):
        model.add_adapter("a", "lora", attn_matrices=["q", "gate"])
    assert not model.adapters_config and not any(".loras." in k for k in model.state_dict())


def test_an_adapter_for_another_family_is_refused(tmp_path):
    model = tiny_model()
    model.add_adapter("a", "lora")
    model.save_adapter(tmp_path / "a", "a")
    with pytest.raises(IncompatibleAdapterError, match="trained for a bert model, but this model is llama"):
        tiny_llama().load_adapter(tmp_path / "a")
