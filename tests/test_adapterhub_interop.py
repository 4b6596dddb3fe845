"""Adapters, heads and fusions saved by AdapterHub's ``adapters`` 1.3.0 give its outputs here.

The fixtures (tests/fixtures/adapterhub, made by make_fixtures.py in a separate environment)
hold tiny BERT and RoBERTa backbones, perturbed adapters in both file formats, and the outputs
that library computed on a padded batch.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterModel, Fuse, Parallel, Stack

FIXTURES = Path(__file__).parent / "fixtures" / "adapterhub"
TOL = 1e-5


def load(family, fmt, names, fusion=False):
    model = AdapterModel.from_pretrained(FIXTURES / family / "backbone").eval()
    for name in names:
        model.load_adapter(FIXTURES / family / fmt / name)
    if fusion:
        model.load_fusion(FIXTURES / family / fmt / "fuse_f1_f2_f3")
    return model


def outputs(model, ref, setup, head=None):
    model.set_active_adapters(setup)
    with torch.no_grad():
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], head=head)
    return out


def close(a, b):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= TOL, diff


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_single_adapters_and_stack(family, fmt):
    ref = load_file(FIXTURES / family / "reference_outputs.safetensors")
    model = load(family, fmt, ["pf", "ho", "par"])
    for name in ["pf", "ho", "par"]:
        out = outputs(model, ref, name)
        close(out.hidden_states, ref[f"{name}.hidden"])
        close(out.logits, ref[f"{name}.logits"])
    out = outputs(model, ref, Stack("pf", "ho"))
    close(out.hidden_states, ref["stack_pf_ho.hidden"])
    close(out.logits, ref["stack_pf_ho.logits"])
    model.set_active_adapters(None)
    with torch.no_grad():
        close(model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).hidden_states,
              ref["base.hidden"])


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_fusion(family, fmt):
    ref = load_file(FIXTURES / family / "reference_outputs.safetensors")
    model = load(family, fmt, ["f1", "f2", "f3"], fusion=True)
    out = outputs(model, ref, Fuse("f1", "f2", "f3"))
    assert out.head == "f1,f2,f3"
    close(out.hidden_states, ref["fuse_f1_f2_f3.hidden"])
    close(out.logits, ref["fuse_f1_f2_f3.logits"])


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_parallel(family, fmt):
    ref = load_file(FIXTURES / family / "reference_outputs.safetensors")
    model = load(family, fmt, ["pf", "f1"])
    out = outputs(model, ref, Parallel("pf", "f1"))
    close(out.hidden_states, ref["parallel_pf_f1.hidden"])
    close(out.logits[0], ref["parallel_pf_f1.logits.0"])
    close(out.logits[1], ref["parallel_pf_f1.logits.1"])


def test_config_hashes_match_adapterhubs_index_keys():
    import json

    from adapterctl import config_hash, load_config

    recorded = json.loads((FIXTURES / "config_hashes.json").read_text())
    ours = {"seq_bn": "pfeiffer", "double_seq_bn": "houlsby", "par_bn": "parallel", "seq_bn_inv": "pfeiffer+inv",
            "double_seq_bn_inv": "houlsby+inv", "seq_bn_r8_gelu": "pfeiffer[reduction_factor=8, non_linearity='gelu']"}
    for name, entry in recorded.items():
        assert config_hash(load_config(entry["config"])) == entry["hash"], name  # their saved config
        assert config_hash(load_config(ours[name])) == entry["hash"], name  # our preset of the same name


def test_head_files_are_matched_by_exact_prefix():
    """AdapterHub's saving matches heads by substring: f1's head file also holds the fusion
    head ``heads.f1,f2,f3.*``. Only ``heads.f1.`` belongs to f1."""
    folder = FIXTURES / "bert" / "safetensors" / "f1"
    assert any(k.startswith("heads.f1,f2,f3.") for k in load_file(folder / "model_head.safetensors"))
    model = AdapterModel.from_pretrained(FIXTURES / "bert" / "backbone")
    model.load_adapter(folder, load_as="renamed")
    assert list(model.heads) == ["renamed"]
    assert sorted(k for k in model.state_dict() if k.startswith("heads.")) == [
        "heads.renamed.1.bias", "heads.renamed.1.weight", "heads.renamed.4.bias", "heads.renamed.4.weight"]


@pytest.mark.parametrize("legacy_config", ["pfeiffer", "seq_bn[reduction_factor=16]"])
def test_legacy_config_forms_in_adapter_config_json(tmp_path, legacy_config):
    """Older files name their config by a string (an alias or the string form)."""
    import json
    import shutil

    folder = tmp_path / "pf"
    shutil.copytree(FIXTURES / "bert" / "bin" / "pf", folder)
    envelope = json.loads((folder / "adapter_config.json").read_text())
    envelope["config"] = legacy_config
    (folder / "adapter_config.json").write_text(json.dumps(envelope))
    ref = load_file(FIXTURES / "bert" / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(FIXTURES / "bert" / "backbone").eval()
    model.load_adapter(folder)
    close(outputs(model, ref, "pf").logits, ref["pf.logits"])


def test_legacy_nested_invertible_adapter_key():
    from adapterctl import load_config

    config = load_config({**load_config("pfeiffer").to_dict(), "inv_adapter": None,
                          "invertible_adapter": {"block_type": "nice", "reduction_factor": 2}})
    assert (config.inv_adapter, config.inv_adapter_reduction_factor) == ("nice", 2)
