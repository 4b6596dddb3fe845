"""AdapterFusion: configs, what train_fusion trains, the regularization loss, save and load."""

import json

import pytest
import torch

from adapterctl import AdapterConfigError, CorruptFileError, Fuse, Stack
from adapterctl.methods.fusion import load_fusion_config
from conftest import batch, perturb, tiny_model

ADAPTERS = ["a", "b", "c"]
FUSION = "a,b,c"


def fused_model(config="dynamic", family="bert", seed=0):
    model = tiny_model(family, seed=seed)
    for n in ADAPTERS:
        model.add_adapter(n, "pfeiffer")
    model.add_fusion(ADAPTERS, config)
    model.add_classification_head(FUSION, num_labels=3)
    perturb(model, ".adapters.")
    perturb(model, "adapter_fusion_layer", std=0.05, seed=2)
    perturb(model, "heads.", seed=3)
    model.set_active_adapters(Fuse(*ADAPTERS))
    return model.eval()


def test_presets_have_adapterhubs_fields_and_defaults():
    dynamic, static = load_fusion_config("dynamic"), load_fusion_config("static")
    assert (dynamic.key, dynamic.query, dynamic.value, dynamic.regularization) == (True, True, True, True)
    assert (static.key, static.query, static.value, static.regularization) == (True, True, False, False)
    for c in (dynamic, static):
        assert (c.query_before_ln, c.residual_before, c.temperature, c.value_before_softmax) == (False, False, False, True)
    assert load_fusion_config({"preset": "dynamic", "temperature": True}).temperature
    with pytest.raises(AdapterConfigError, match="unknown fusion config"):
        load_fusion_config("dynamik")


def test_train_fusion_trains_exactly_the_fusion_and_head_and_keeps_adapters_bit_identical():
    model, inputs = fused_model(), batch()
    model.train_fusion([ADAPTERS])  # the seed's nested-list shorthand for Fuse(a, b, c)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if f"adapter_fusion_layer.{FUSION}." in n or n.startswith(f"heads.{FUSION}.")}
    assert trainable == expected and trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**inputs, labels=torch.tensor([0, 1, 2])).loss + model.fusion_regularization_loss()
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n  # adapters and backbone: bit-identical


def test_regularization_pulls_the_value_matrix_towards_the_identity():
    model = fused_model()
    model.train_fusion(Fuse(*ADAPTERS))
    loss = model.fusion_regularization_loss()
    values = [m.value.weight for n, m in model.named_modules() if n.endswith(f"adapter_fusion_layer.{FUSION}")]
    assert len(values) == 2  # one fusion layer per transformer layer
    expected = sum(0.01 * (torch.eye(32) - v).pow(2).sum() for v in values)
    assert torch.allclose(loss, expected)
    assert fused_model("static").fusion_regularization_loss() is None  # static fusion: no value matrix


def test_fresh_dynamic_fusion_of_one_adapter_passes_it_through():
    """Value matrix ~ identity and one key: the fusion outputs the adapter's own result."""
    model = tiny_model()
    model.add_adapter("a", "pfeiffer")
    perturb(model, ".adapters.")
    model.add_fusion(["a"])
    with torch.no_grad():
        model.set_active_adapters(Fuse("a"))
        fused = model(**batch()).hidden_states
        model.set_active_adapters("a")
        alone = model(**batch()).hidden_states
    assert (fused - alone).abs().max().item() < 1e-4


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_fusion_save_then_load_reproduces_logits_exactly(tmp_path, family):
    model, inputs = fused_model(family=family), batch()
    with torch.no_grad():
        expected = model(**inputs).logits
    for n in ADAPTERS:
        model.save_adapter(tmp_path / n, n)
    model.save_fusion(tmp_path / "fusion", FUSION)
    assert sorted(p.name for p in (tmp_path / "fusion").iterdir()) == [
        "adapter_fusion_config.json", "head_config.json", "model_adapter_fusion.safetensors", "model_head.safetensors",
    ]
    fresh = tiny_model(family, seed=0)
    for n in ADAPTERS:
        fresh.load_adapter(tmp_path / n)
    assert fresh.load_fusion(tmp_path / "fusion", set_active=True) == FUSION
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, expected)


def test_setup_saves_and_loads_as_adapter_setup_json(tmp_path):
    model = fused_model()
    model.add_adapter("lang", "pfeiffer")
    perturb(model, ".adapters.lang.", seed=5)
    setup = Stack("lang", Fuse(*ADAPTERS))
    model.set_active_adapters(setup)
    inputs = batch()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_adapter_setup(tmp_path / "setup")
    saved = json.loads((tmp_path / "setup" / "adapter_setup.json").read_text())
    assert saved["adapter_setup"] == setup.to_dict() and saved["head_setup"] == FUSION
    assert saved["adapter_setup"]["children"][0] == {"type": "single", "children": ["lang"]}
    fresh = tiny_model()
    loaded, head = fresh.load_adapter_setup(tmp_path / "setup", set_active=True)
    assert loaded == setup and head == FUSION
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, expected)
    with pytest.raises(FileExistsError):
        model.save_adapter_setup(tmp_path / "setup")


def test_a_setup_file_naming_a_folder_outside_is_refused_and_nothing_loads(tmp_path):
    model = tiny_model()
    model.add_adapter("a", "pfeiffer")
    model.save_adapter(tmp_path / "outside", "a")
    folder = tmp_path / "setup"
    folder.mkdir()
    (folder / "adapter_setup.json").write_text(json.dumps({"adapter_setup": Stack("../outside").to_dict()}))
    fresh = tiny_model()
    with pytest.raises(CorruptFileError, match="'../outside' in .* is not a plain file or folder name"):
        fresh.load_adapter_setup(folder)
    assert not fresh.adapters_config


def test_fusing_adapters_placed_in_different_layers_is_refused():
    """Before: accepted, then the forward failed in the layer where one adapter was missing."""
    model = tiny_model()
    model.add_adapter("a", "pfeiffer")
    model.add_adapter("b", "pfeiffer", leave_out=[0])
    with pytest.raises(AdapterConfigError, match=r"leave out different layers \(leave_out: a \[\], b \[0\]\)"):
        model.add_fusion(["a", "b"])
    assert model.fusions_config == {}
    model.add_adapter("c", "pfeiffer", leave_out=[0])
    model.add_fusion(["b", "c"], set_active=True)
    assert model(**batch()).hidden_states.shape[0] == 3


def test_deleting_what_the_setup_uses_switches_off_the_setup_and_the_head_it_chose():
    """AdapterHub leaves the deleted adapter's head active (tests/fixtures/adapterhub_heads/facts.json,
    delete_rules); then the next call runs that head on a backbone without its adapter."""
    model = fused_model()
    model.add_classification_head("a", num_labels=2)
    model.add_classification_head("keep", num_labels=2)
    model.set_active_adapters("a")
    assert model.active_head == "a"
    model.delete_adapter("a")
    assert (model.active_setup, model.active_head) == (None, None)
    assert "a" in model.heads and model(**batch()).logits is None

    model.add_classification_head("b,c", num_labels=2)
    model.add_fusion(["b", "c"], set_active=True)
    assert model.active_head == "b,c"
    model.delete_fusion("b,c")
    assert (model.active_setup, model.active_head) == (None, None)
    model.add_fusion(["b", "c"], set_active=True)
    model.active_head = "keep"
    model.delete_fusion("b,c")
    assert (model.active_setup, model.active_head) == (None, "keep")  # a head the user chose stays


def test_deleting_a_parallel_head_clears_the_active_heads():
    model = fused_model()
    for n in "bc":
        model.add_classification_head(n, num_labels=2)
    from adapterctl import Parallel

    model.set_active_adapters(Parallel("b", "c"))
    assert model.active_head == ["b", "c"]
    model.delete_head("c")
    assert model.active_head is None


def test_a_failed_fusion_overwrite_keeps_the_fusion_it_would_replace(tmp_path):
    model, inputs = fused_model(), batch()
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_fusion(tmp_path / "f", FUSION)
    weights = tmp_path / "f" / "model_adapter_fusion.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])  # truncated
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        model.load_fusion(tmp_path / "f", overwrite_ok=True)
    from safetensors.torch import load_file, save_file

    model.save_fusion(tmp_path / "g", FUSION)
    tensors = load_file(str(tmp_path / "g" / "model_adapter_fusion.safetensors"))
    tensors.pop(next(iter(tensors)))  # a key missing: only found after the fusion was rebuilt
    save_file(tensors, str(tmp_path / "g" / "model_adapter_fusion.safetensors"))
    with pytest.raises(CorruptFileError, match=r"weights do not match the config; missing \[.*\.a,b,c\."):
        model.load_fusion(tmp_path / "g", overwrite_ok=True)
    assert list(model.fusions_config) == [FUSION] and set(model.heads) == {FUSION}
    model.set_active_adapters(Fuse(*ADAPTERS))
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)


def test_fusion_attentions_are_each_layers_softmax_over_the_fused_adapters():
    """What bench/fusion_experiment.py recomputed from a hook, read from the model (issue 18)."""
    model, inputs = fused_model(), batch()
    seen = {}

    def keep(module, args):
        query, up, _ = args
        scores = (module.query(query).unsqueeze(2) @ module.key(up).transpose(-2, -1)).squeeze(2)
        seen[module] = torch.softmax(scores, dim=-1)

    handles = [m.register_forward_pre_hook(keep) for m in model.fusion_modules(FUSION)]
    with torch.no_grad():
        attentions = model.fusion_attentions(**inputs)
    for h in handles:
        h.remove()
    assert list(attentions) == [FUSION] and sorted(attentions[FUSION]) == [0, 1]
    for idx, module in enumerate(model.fusion_modules(FUSION)):
        probs = attentions[FUSION][idx]["output_adapter"]
        assert probs.shape == (3, 9, 3)
        assert torch.allclose(probs.sum(-1), torch.ones(3, 9))
        assert torch.allclose(probs, seen[module], atol=1e-6)
    with torch.no_grad():
        assert model.fusion_attentions(**inputs, adapter_setup="a") == {}  # no fusion ran
