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
