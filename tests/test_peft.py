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
DECODERS = FIXTURES / "adapterhub_decoders"
BACKBONES = {"bert": BERT, "llama": DECODERS / "llama" / "backbone", "gpt2": DECODERS / "gpt2" / "backbone"}
PEFT_PYTHON = Path("/work/envs/peftvenv/bin/python")


@pytest.fixture(scope="module")
def ref():
    return load_file(PEFT / "reference_outputs.safetensors")


def bert_hidden(model, ref):
    with torch.no_grad():
        return model(input_ids=ref["inputs.bert.input_ids"], attention_mask=ref["inputs.bert.attention_mask"]).hidden_states


def outputs(model, ref, backbone: str) -> dict:
    """What the fixtures recorded: the last hidden states (after a decoder's final norm) and a
    decoder's logits (its lm_head: our static head ``default``)."""
    with torch.no_grad():
        out = model(input_ids=ref[f"inputs.{backbone}.input_ids"],
                    attention_mask=ref[f"inputs.{backbone}.attention_mask"])
    return {"hidden": out.hidden_states} if backbone == "bert" else {"hidden": out.hidden_states, "logits": out.logits}


def max_diffs(got: dict, ref, key: str) -> dict:
    return {k: (v - ref[f"{key}.{k}"]).abs().max().item() for k, v in got.items()}


@pytest.mark.parametrize("case", ["bert_lora_list", "bert_lora_regex", "bert_lora_layers", "bert_lora_rslora",
                                  "bert_lora_patterns", "bert_lora_dora", "bert_ia3", "llama_ia3",
                                  "gpt2_lora_fanin"])
def test_peft_folders_give_peft_outputs(ref, case):
    backbone = case.split("_")[0]
    model = AdapterModel.from_pretrained(BACKBONES[backbone]).eval()
    name = model.load_adapter(PEFT / case, set_active=True)  # the format is detected
    assert name == case
    assert all(d <= 1e-5 for d in max_diffs(outputs(model, ref, backbone), ref, case).values())
    model.merge_adapter(case)
    assert all(d <= 1e-5 for d in max_diffs(outputs(model, ref, backbone), ref, f"{case}.merged").values())


def test_peft_fields_become_ours():
    """rank_pattern / alpha_pattern per module path (PEFT's keys matched as PEFT does), use_dora as
    PEFT's DoRA, IA3's feedforward_modules (the suffix 'output.dense' also picks attention.output.dense)."""
    model = AdapterModel.from_pretrained(BERT).eval()
    for case in ("bert_lora_patterns", "bert_lora_dora", "bert_ia3"):
        model.load_adapter(PEFT / case)
    patterns = model.adapters_config["bert_lora_patterns"]
    assert (patterns.r, patterns.alpha) == (4, 8)
    assert patterns.rank_pattern == {"encoder.layer.0.attention.self.value": 2, "encoder.layer.1.attention.self.query": 6,
                                     "encoder.layer.1.attention.self.value": 2}
    assert patterns.alpha_pattern == {f"encoder.layer.{i}.attention.self.query": 32 for i in (0, 1)}
    query = model.bert.encoder.layer[1].attention.self.query.loras["bert_lora_patterns"]
    assert (query.lora_A.shape[0], query.scaling) == (6, 32 / 6)
    dora = model.adapters_config["bert_lora_dora"]
    assert (dora.use_dora, dora.dora_variant) == (True, "peft")
    assert model.adapters_config["bert_ia3"].feedforward_modules == tuple(
        f"encoder.layer.{i}.{m}" for i in (0, 1) for m in ("attention.output.dense", "output.dense"))
    assert model.bert.encoder.layer[0].output.dense.loras["bert_ia3"].lora_B.shape == (37, 1)  # its input (intermediate_size 37)


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
    ("bert_lora_alllinear", "adapts pooler.dense, which adapterctl's LoRA cannot place"),
    ("llama_lora_alllinear", "adapts layers.0.mlp.gate_proj, which adapterctl's LoRA cannot place"),
    ("llama_lora", "modules_to_save=.'lm_head'. is not supported"),
])
def test_peft_features_we_cannot_follow_are_named(case, message):
    model = AdapterModel.from_pretrained(BACKBONES[case.split("_")[0]]).eval()
    with pytest.raises(AdapterConfigError, match=message):
        model.load_adapter(PEFT / case)
    assert not model.adapters_config and not any(".loras." in k for k in model.state_dict())


OURS = {"lo": "bert", "do": "bert", "ia": "bert", "g2lo": "gpt2", "g2ia": "gpt2"}  # adapter -> backbone


def ours(tmp_path) -> dict:
    """Trained-looking adapters saved as PEFT, by backbone. BERT: a LoRA (q, v, intermediate) with
    per-module ranks and alphas, PEFT's DoRA, an IA3 scaling output.dense's input. GPT-2: a LoRA
    on q and v (two slices of the fused c_attn) and the MLP, an IA3 on k, v and the MLP."""
    models = {b: AdapterModel.from_pretrained(BACKBONES[b]).eval() for b in ("bert", "gpt2")}
    models["bert"].add_adapter("lo", "lora", r=4, alpha=16, intermediate_lora=True, leave_out=[0],
                               rank_pattern={"value": 2}, alpha_pattern={"intermediate.dense": 3})
    models["bert"].add_adapter("do", "dora", r=2, dora_variant="peft")
    models["bert"].add_adapter("ia", "ia3", alpha=2, intermediate_lora=False, output_lora=True,
                               feedforward_modules=["output.dense"])
    models["gpt2"].add_adapter("g2lo", "lora", r=2, alpha=6, intermediate_lora=True)
    models["gpt2"].add_adapter("g2ia", "ia3")
    for model in models.values():
        perturb(model, ".loras.", std=0.3)
    for name, backbone in OURS.items():
        models[backbone].save_adapter(tmp_path / name, name, format="peft")
    return models


def our_outputs(models, ref) -> dict:
    expected = {}
    for name, backbone in OURS.items():
        with models[backbone].adapter_setup(name):
            expected[name] = outputs(models[backbone], ref, backbone)["hidden"]
    return expected


def test_our_peft_folders_reload_with_our_outputs(ref, tmp_path):
    models = ours(tmp_path)
    config = json.loads((tmp_path / "lo" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 16)
    assert config["rank_pattern"] == {"encoder.layer.1.attention.self.value": 2}
    assert config["alpha_pattern"] == {"encoder.layer.1.intermediate.dense": 3}  # value: scaling 16 / 2 as ours
    assert "encoder.layer.1.intermediate.dense" in config["target_modules"]
    assert "base_model.model.encoder.layer.1.attention.self.query.lora_A.weight" in load_file(
        tmp_path / "lo" / "adapter_model.safetensors")
    assert json.loads((tmp_path / "ia" / "adapter_config.json").read_text())["feedforward_modules"] == [
        "encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    gpt2 = json.loads((tmp_path / "g2lo" / "adapter_config.json").read_text())
    assert gpt2["fan_in_fan_out"] and gpt2["rank_pattern"] == {f"h.{i}.attn.c_attn": 4 for i in (0, 1)}
    assert load_file(tmp_path / "g2lo" / "adapter_model.safetensors")["base_model.model.h.0.attn.c_attn.lora_B.weight"].shape == (96, 4)
    expected = our_outputs(models, ref)
    fresh = {b: AdapterModel.from_pretrained(BACKBONES[b]).eval() for b in ("bert", "gpt2")}
    for name, backbone in OURS.items():
        fresh[backbone].load_adapter(tmp_path / name, load_as=f"{name}2")
        with fresh[backbone].adapter_setup(f"{name}2"):
            assert (outputs(fresh[backbone], ref, backbone)["hidden"] - expected[name]).abs().max().item() <= 1e-5
    models["bert"].add_adapter("d", "dora")
    with pytest.raises(AdapterConfigError, match="cannot be written as a PEFT folder"):
        models["bert"].save_adapter(tmp_path / "d", "d", format="peft")


def test_peft_fields_survive_our_own_files(ref, tmp_path):
    """Saved in AdapterHub's form, the fields beyond AdapterHub's are written only when set."""
    models = ours(tmp_path / "peft")
    bert = {n for n, b in OURS.items() if b == "bert"}
    for name in bert:
        models["bert"].save_adapter(tmp_path / name, name)
    saved = {n: json.loads((tmp_path / n / "adapter_config.json").read_text())["config"] for n in bert}
    assert saved["lo"]["rank_pattern"] == {"value": 2} and "feedforward_modules" not in saved["lo"]
    assert saved["do"]["dora_variant"] == "peft" and "rank_pattern" not in saved["do"]
    expected = our_outputs(models, ref)
    fresh = AdapterModel.from_pretrained(BERT).eval()
    for name in bert:
        fresh.load_adapter(tmp_path / name)
        with fresh.adapter_setup(name):
            assert (outputs(fresh, ref, "bert")["hidden"] - expected[name]).abs().max().item() <= 1e-5


CHECK_IN_PEFT = """
import json, sys, torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel
folder = sys.argv[1]
expected, backbones = load_file(folder + "/expected.safetensors"), json.loads(sys.argv[2])
for name, (backbone, path) in backbones.items():
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(path), folder + "/" + name).eval()
    with torch.no_grad():
        out = model(input_ids=expected[backbone + ".input_ids"],
                    attention_mask=expected[backbone + ".attention_mask"]).last_hidden_state
    print(name, (out - expected[name]).abs().max().item())
"""


@pytest.mark.skipif(not PEFT_PYTHON.exists(), reason="PEFT's environment (/work/envs/peftvenv) is not on this machine")
def test_peft_loads_our_folders_with_our_outputs(ref, tmp_path):
    expected = our_outputs(ours(tmp_path), ref)
    for backbone in ("bert", "gpt2"):
        for k in ("input_ids", "attention_mask"):
            expected[f"{backbone}.{k}"] = ref[f"inputs.{backbone}.{k}"]
    save_file(expected, tmp_path / "expected.safetensors")
    backbones = {name: (b, str(BACKBONES[b].resolve())) for name, b in OURS.items()}
    result = subprocess.run([str(PEFT_PYTHON), "-c", CHECK_IN_PEFT, str(tmp_path), json.dumps(backbones)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    diffs = dict(line.split() for line in result.stdout.strip().splitlines())
    assert diffs.keys() == set(OURS) and all(float(d) <= 1e-5 for d in diffs.values()), diffs
