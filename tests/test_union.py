"""Config unions (AdapterHub's ``ConfigUnion``): one adapter of several methods' parts, in every
form AdapterHub reads, against its recorded outputs, names, counts and hash
(tests/fixtures/adapterhub_methods), and its rule for parts that collide."""

import json

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterConfigError, AdapterModel, BnConfig, ConfigUnion, Fuse, config_hash
from adapterctl.core.config import load_config
from conftest import batch, perturb, tiny_model
from test_compacter import METHODS, bert_base_shape, close, outputs, reloads_trained

FACTS = json.loads((METHODS / "configs.json").read_text())


def test_every_form_of_a_union_is_the_same_config():
    string = load_config("seq_bn[reduction_factor=4]|lora")
    parts = ConfigUnion(load_config("seq_bn", reduction_factor=4), "lora")
    from_file = load_config(FACTS["union"]["config"])
    by_method = ConfigUnion(configs={"bottleneck": load_config("seq_bn", reduction_factor=4).to_dict(),
                                     "lora": load_config("lora").to_dict()})
    assert string == parts == by_method
    assert [type(c).__name__ for c in string.configs] == ["BnConfig", "LoRAConfig"]
    assert from_file.to_file_dict() == string.to_file_dict() == FACTS["union"]["config"]
    assert config_hash(string) == FACTS["union"]["hash"]  # AdapterHub's index key
    changed = string.replace(dropout=0.1, r=4)
    assert [c.dropout for c in changed.configs] == [0.1, 0.1] and changed.configs[1].r == 4
    assert changed.configs[0] == string.configs[0].replace(dropout=0.1)


def test_parameter_count_follows_adapterhub():
    model = bert_base_shape()
    model.add_adapter("u", "seq_bn[reduction_factor=4]|lora")
    row = model.adapter_summary(as_dict=True)[0]
    assert (row["method"], row["params"]) == ("pfeiffer|lora", 3_845_376)
    assert json.loads((METHODS / "param_counts.json").read_text())["seq_bn[reduction_factor=4]|lora"]["params"] == \
        3_845_376


@pytest.mark.parametrize("form", ["safetensors", "bin"])
def test_their_union_gives_their_outputs_and_ours_keeps_their_files(form, tmp_path):
    reference = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    model.load_adapter(METHODS / form / "union")
    out = outputs(model, reference, "union")
    close(out.hidden_states, reference["union.hidden"])
    close(out.logits, reference["union.logits"])
    model.save_adapter(tmp_path / "union", "union")
    saved = json.loads((tmp_path / "union" / "adapter_config.json").read_text())["config"]
    assert saved == json.loads((METHODS / form / "union" / "adapter_config.json").read_text())["config"]
    if form == "safetensors":
        ours, theirs = (load_file(f / "union" / "adapter.safetensors") for f in (tmp_path, METHODS / form))
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    fresh = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    fresh.load_adapter(tmp_path / "union", load_as="again")
    close(outputs(fresh, reference, "again").logits, reference["union.logits"])


def test_a_fresh_union_is_an_identity_and_trains_all_its_parts_as_one(tmp_path):
    model = tiny_model()
    inputs = batch()
    with torch.no_grad():
        base = model(**inputs).hidden_states
    model.add_adapter("u", ConfigUnion("seq_bn", "lora[r=2]"))
    model.add_adapter("other", "lora")
    close(outputs(model, inputs, "u").hidden_states, base, 0.0)
    model.train_adapter("u")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")}
    assert trainable and all(".u." in n for n in trainable)
    assert any(".adapters.u." in n for n in trainable) and any(".loras.u." in n for n in trainable)
    fresh = reloads_trained(model, "u", inputs, base, tmp_path)
    fresh.delete_adapter("u")
    assert not any(".u." in k for k in fresh.state_dict())


def test_two_bottleneck_parts_at_different_places_both_run():
    model = tiny_model()
    inputs = batch()
    union = ConfigUnion(BnConfig(mh_adapter=True, output_adapter=False, reduction_factor=4, non_linearity="relu"),
                        "pfeiffer[reduction_factor=8]")
    model.add_adapter("u", union)
    model.add_adapter("mh", union.configs[0])
    model.add_adapter("out", union.configs[1])
    perturb(model, ".u.", seed=3)
    with torch.no_grad():
        for site in ("attention.output", "output"):
            for layer in model.backbone.encoder.layer:
                adapters = layer.get_submodule(site).adapters
                adapters["mh" if site == "attention.output" else "out"].load_state_dict(adapters["u"].state_dict())
    close(outputs(model, inputs, "u").hidden_states, outputs(model, inputs, ["mh", "out"]).hidden_states, 1e-6)
    # leave_out decides per layer: disjoint layers are fine, a shared layer is refused when added
    model.add_adapter("split", "pfeiffer[leave_out=[0]]|pfeiffer[leave_out=[1]]")
    with pytest.raises(AdapterConfigError, match=r"config 1 of the union \(bottleneck\) places modules where"):
        model.add_adapter("meet", "pfeiffer[leave_out=[0]]|pfeiffer")
    assert "meet" not in model.adapters_config and not any(".meet." in k for k in model.state_dict())


@pytest.mark.parametrize("spec, message", [
    ("lora|lora[r=2]", r"configs 0 and 1 of the union are both lora adapters at the same places"),
    ("houlsby|pfeiffer", r"configs 0 and 1 of the union are both bottleneck adapters at the same places"),
    ("pfeiffer", None),
    ("pfeiffer|lora[rank=2]", r"unknown adapter config field\(s\) rank for lora"),
    ("pfeiffer|no_such", r"unknown adapter config 'no_such'"),
])
def test_unions_that_cannot_be_built_are_one_line_errors(spec, message):
    if message is None:  # a single config is no union
        with pytest.raises(AdapterConfigError, match="at least two configs"):
            ConfigUnion(spec)
        return
    with pytest.raises(AdapterConfigError, match=message):
        load_config(spec)


def test_a_union_runs_only_in_blocks_all_its_parts_run_in():
    model = tiny_model()
    model.add_adapter("u", "pfeiffer|lora")
    model.add_adapter("p", "pfeiffer")
    with pytest.raises(AdapterConfigError, match=r"'u' is a union adapter, and union cannot run inside Fuse"):
        model.add_fusion(Fuse("u", "p"))  # its LoRA part cannot be fused
    with pytest.raises(AdapterConfigError, match=r"unknown adapter config field\(s\) rank for any part"):
        model.add_adapter("v", load_config("pfeiffer|lora").replace(rank=2))


NAMED = ["mam", "unipelt"]  # AdapterHub's MAMConfig, UniPELTConfig


def test_mam_and_unipelt_are_adapterhubs_presets_with_its_counts():
    counts = json.loads((METHODS / "param_counts.json").read_text())
    model = bert_base_shape()
    for name in NAMED:
        config = load_config(name)
        assert config.to_file_dict() == counts[name]["config"]
        narrowed = load_config(name, bottleneck_size=48)  # the fixtures' prefix MLP; only prefix tuning has the field
        assert narrowed.to_file_dict() == FACTS[name]["config"] and config_hash(narrowed) == FACTS[name]["hash"]
        model.add_adapter(name, name)
    rows = {row["name"]: (row["method"], row["params"]) for row in model.adapter_summary(as_dict=True)}
    assert rows == {"mam": ("mam", 22_493_984), "unipelt": ("unipelt", 11_083_376)}
    assert [counts[name]["params"] for name in NAMED] == [22_493_984, 11_083_376]


@pytest.mark.parametrize("name", NAMED)
def test_their_mam_and_unipelt_give_their_outputs_and_reload(name, tmp_path):
    """AdapterHub's .bin repeats the prefix pool under every attention layer; the union passes the
    file through prefix tuning's ``file_tensors``, so ours saves the pool once, under their names."""
    reference = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    model.load_adapter(METHODS / "bin" / name)
    assert model.adapters_config[name].to_file_dict() == load_config(name, bottleneck_size=48).to_file_dict()
    out = outputs(model, reference, name)
    close(out.hidden_states, reference[f"{name}.hidden"])
    close(out.logits, reference[f"{name}.logits"])
    model.save_adapter(tmp_path / name, name)
    saved = json.loads((tmp_path / name / "adapter_config.json").read_text())["config"]
    assert saved == json.loads((METHODS / "bin" / name / "adapter_config.json").read_text())["config"]
    theirs = torch.load(METHODS / "bin" / name / "pytorch_adapter.bin", weights_only=True)
    repeated = {k for k in theirs if ".prefix_tuning.pool." in k}
    assert repeated and set(load_file(tmp_path / name / "adapter.safetensors")) == set(theirs) - repeated
    fresh = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    fresh.load_adapter(tmp_path / name, load_as="again")
    close(outputs(fresh, reference, "again").logits, reference[f"{name}.logits"])


def test_a_fresh_unipelt_trains_every_part_and_gate_and_reloads(tmp_path):
    model = tiny_model()
    inputs = batch()
    with torch.no_grad():
        base = model(**inputs).hidden_states
    model.add_adapter("u", "unipelt", bottleneck_size=8)
    model.train_adapter("u")
    model(**inputs).hidden_states.pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")}
    assert all(".u." in n and g is not None for n, g in grads.items())
    assert any("loras.u.gate." in n for n in grads) and any("adapters.u.gate." in n for n in grads)
    # the LoRA and bottleneck parts start at zero output (so do their gates' gradients); these move
    for part in ("prefix_gates.u.", "prefix_tunings.u.", "loras.u.lora_B", "adapters.u.adapter_up."):
        assert any(part in n and g.abs().sum() > 0 for n, g in grads.items()), part
    reloads_trained(model, "u", inputs, base, tmp_path)
