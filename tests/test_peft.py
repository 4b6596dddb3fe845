"""PEFT's adapter folders: the folders PEFT 0.21 wrote (tests/fixtures/peft) load with PEFT's
outputs, PEFT features we cannot follow are one-line errors, and folders we write load in PEFT
itself (checked in its own environment, /work/envs/peftvenv, where it exists)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapterctl import AdapterConfigError, AdapterModel
from conftest import perturb

FIXTURES = Path(__file__).parent / "fixtures"
PEFT = FIXTURES / "peft"
BERT = FIXTURES / "adapterhub_methods" / "backbone"
PEFT_PYTHON = Path("/work/envs/peftvenv/bin/python")


@pytest.fixture(scope="module")
def ref():
    return load_file(PEFT / "reference_outputs.safetensors")


def bert_hidden(model, ref):
    with torch.no_grad():
        return model(input_ids=ref["inputs.bert.input_ids"], attention_mask=ref["inputs.bert.attention_mask"]).hidden_states


@pytest.mark.parametrize("case", ["bert_lora_list", "bert_lora_regex", "bert_lora_layers", "bert_lora_rslora"])
def test_peft_lora_folders_give_peft_outputs(ref, case):
    model = AdapterModel.from_pretrained(BERT).eval()
    name = model.load_adapter(PEFT / case, set_active=True)  # the format is detected
    assert name == case
    assert (bert_hidden(model, ref) - ref[f"{case}.hidden"]).abs().max().item() <= 1e-5
    model.merge_adapter(case)
    assert (bert_hidden(model, ref) - ref[f"{case}.merged.hidden"]).abs().max().item() <= 1e-5


def test_a_legacy_bin_is_read_as_tensors_only(ref, tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    shutil.copy(PEFT / "bert_lora_regex" / "adapter_config.json", folder)
    torch.save(load_file(PEFT / "bert_lora_regex" / "adapter_model.safetensors"), folder / "adapter_model.bin")
    model = AdapterModel.from_pretrained(BERT).eval()
    model.load_adapter(folder, set_active=True)
    assert (bert_hidden(model, ref) - ref["bert_lora_regex.hidden"]).abs().max().item() <= 1e-5
    config = model.adapters_config["lora"]
    assert (config.attn_matrices, config.leave_out, config.r, config.alpha) == (("q", "k"), (0,), 4, 8)


@pytest.mark.parametrize("case, message", [
    ("bert_ia3", "feedforward_modules .'output.dense'. scale their projection's input"),
    ("bert_lora_alllinear", "adapts pooler.dense, which adapterctl's LoRA cannot place"),
    ("bert_lora_dora", "use_dora=True is not supported"),
    ("bert_lora_patterns", "rank_pattern="),
])
def test_peft_features_we_cannot_follow_are_named(case, message):
    model = AdapterModel.from_pretrained(BERT).eval()
    with pytest.raises(AdapterConfigError, match=message):
        model.load_adapter(PEFT / case)
    assert not model.adapters_config and not any(".loras." in k for k in model.state_dict())


def ours(tmp_path):
    """A trained-looking LoRA (q, v, intermediate) and IA3 on the fixture BERT, saved as PEFT."""
    model = AdapterModel.from_pretrained(BERT).eval()
    model.add_adapter("lo", "lora", r=4, alpha=16, intermediate_lora=True, leave_out=[0])
    model.add_adapter("ia", "ia3", alpha=2)
    perturb(model, ".loras.", std=0.3)
    for name in ("lo", "ia"):
        model.save_adapter(tmp_path / name, name, format="peft")
    return model


def test_our_peft_folders_reload_with_our_outputs(ref, tmp_path):
    model = ours(tmp_path)
    config = json.loads((tmp_path / "lo" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 16)
    assert "encoder.layer.1.intermediate.dense" in config["target_modules"]
    assert "base_model.model.encoder.layer.1.attention.self.query.lora_A.weight" in load_file(
        tmp_path / "lo" / "adapter_model.safetensors")
    fresh = AdapterModel.from_pretrained(BERT).eval()
    for name in ("lo", "ia"):
        fresh.load_adapter(tmp_path / name, load_as=f"{name}2")
        with model.adapter_setup(name):
            expected = bert_hidden(model, ref)
        with fresh.adapter_setup(f"{name}2"):
            assert (bert_hidden(fresh, ref) - expected).abs().max().item() <= 1e-5
    model.add_adapter("d", "dora")
    with pytest.raises(AdapterConfigError, match="cannot be written as a PEFT folder"):
        model.save_adapter(tmp_path / "d", "d", format="peft")


CHECK_IN_PEFT = """
import sys, torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel
backbone, expected = sys.argv[1], load_file(sys.argv[2])
for name in sys.argv[3:]:
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), sys.argv[2].rsplit("/", 1)[0] + "/" + name).eval()
    with torch.no_grad():
        out = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).last_hidden_state
    print(name, (out - expected[name]).abs().max().item())
"""


@pytest.mark.skipif(not PEFT_PYTHON.exists(), reason="PEFT's environment (/work/envs/peftvenv) is not on this machine")
def test_peft_loads_our_folders_with_our_outputs(ref, tmp_path):
    model = ours(tmp_path)
    expected = {"input_ids": ref["inputs.bert.input_ids"], "attention_mask": ref["inputs.bert.attention_mask"]}
    for name in ("lo", "ia"):
        with model.adapter_setup(name):
            expected[name] = bert_hidden(model, ref)
    save_file(expected, tmp_path / "expected.safetensors")
    result = subprocess.run([str(PEFT_PYTHON), "-c", CHECK_IN_PEFT, str(BERT.resolve()),
                             str(tmp_path / "expected.safetensors"), "lo", "ia"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    diffs = dict(line.split() for line in result.stdout.strip().splitlines())
    assert diffs.keys() == {"lo", "ia"} and all(float(d) <= 1e-5 for d in diffs.values()), diffs
