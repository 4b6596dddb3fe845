"""PEFT's adapter folders: the folders PEFT 0.21 wrote (tests/fixtures/peft) load with PEFT's
outputs, PEFT features we cannot follow are one-line errors, and folders we write load in PEFT
itself (peft==0.21.0, in the test extra) with our outputs."""

import json
import shutil
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
BACKBONES = {"bert": BERT, "llama": DECODERS / "llama" / "backbone", "gpt2": DECODERS / "gpt2" / "backbone",
             "neox": PEFT / "neox_backbone",  # a tiny GPT-NeoX: q, k, v fused per head
             "bert_seqcls": PEFT / "bert_seqcls_backbone"}  # a BertForSequenceClassification: our head "default"


@pytest.fixture(scope="module")
def ref():
    return load_file(PEFT / "reference_outputs.safetensors")


def bert_hidden(model, ref):
    with torch.no_grad():
        return model(input_ids=ref["inputs.bert.input_ids"], attention_mask=ref["inputs.bert.attention_mask"]).hidden_states


def outputs(model, ref, backbone: str) -> dict:
    """What the fixtures recorded: the last hidden states (after a decoder's final norm), BERT's
    pooler output, the logits of a task model's head (our static head ``default``)."""
    with torch.no_grad():
        out = model(input_ids=ref[f"inputs.{backbone}.input_ids"],
                    attention_mask=ref[f"inputs.{backbone}.attention_mask"])
        if backbone == "bert":  # BertModel's pooler (its pooler.dense may be adapted)
            pooler = model.backbone(input_ids=ref["inputs.bert.input_ids"],
                                    attention_mask=ref["inputs.bert.attention_mask"]).pooler_output
            return {"hidden": out.hidden_states, "pooler": pooler}
    return {"hidden": out.hidden_states, "logits": out.logits}


def max_diffs(got: dict, ref, key: str) -> dict:
    return {k: (v - ref[f"{key}.{k}"]).abs().max().item() for k, v in got.items()}


def backbone_of(case: str) -> str:
    return "bert_seqcls" if case.startswith("bert_seqcls") else case.split("_")[0]


@pytest.mark.parametrize("case", ["bert_lora_list", "bert_lora_regex", "bert_lora_layers", "bert_lora_rslora",
                                  "bert_lora_patterns", "bert_lora_dora", "bert_lora_perlayer", "bert_lora_alllinear",
                                  "bert_ia3", "bert_vera", "bert_adalora", "bert_adalora_allocated",
                                  "bert_seqcls_lora", "llama_ia3", "llama_lora_alllinear", "llama_lora",
                                  "gpt2_lora_fanin", "gpt2_ia3", "neox_lora", "neox_ia3"])
def test_peft_folders_give_peft_outputs(ref, case):
    """Every fixture (bert_lora_alllinear: pooler.dense too, outside the layers); with
    modules_to_save (bert_seqcls_lora: classifier, llama_lora: lm_head) the logits are our head's."""
    backbone = backbone_of(case)
    model = AdapterModel.from_pretrained(BACKBONES[backbone]).eval()
    name = model.load_adapter(PEFT / case, set_active=True)  # the format is detected
    assert name == case
    assert all(d <= 1e-5 for d in max_diffs(outputs(model, ref, backbone), ref, case).values())
    model.merge_adapter(case)
    assert all(d <= 1e-5 for d in max_diffs(outputs(model, ref, backbone), ref, f"{case}.merged").values())


def test_peft_adapters_share_a_mixed_batch(ref):
    """Each row through its own PEFT adapter (adapter_names=): PEFT's DoRA and the input-scaling
    IA3 run grouped, per-module ranks and pooler.dense too; each row gives PEFT's output."""
    model = AdapterModel.from_pretrained(BERT).eval()
    for pair in (["bert_lora_dora", "bert_ia3"], ["bert_lora_patterns", "bert_lora_alllinear"]):
        for case in pair:
            model.load_adapter(PEFT / case)
        with torch.no_grad():
            mixed = model(input_ids=ref["inputs.bert.input_ids"], attention_mask=ref["inputs.bert.attention_mask"],
                          adapter_names=pair).hidden_states
        for row, case in enumerate(pair):
            assert (mixed[row] - ref[f"{case}.hidden"][row]).abs().max().item() <= 1e-5


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


def test_modules_outside_the_projections_and_a_head(ref):
    """Llama's gate_proj (no AdapterHub projection) via target_modules; modules_to_save=["lm_head"]
    as our head named like the adapter, a trained copy: the backbone's own head stays."""
    model = AdapterModel.from_pretrained(BACKBONES["llama"]).eval()
    base = outputs(model, ref, "llama")["logits"]
    model.load_adapter(PEFT / "llama_lora")
    config = model.adapters_config["llama_lora"]
    assert "layers.1.mlp.gate_proj" in config.target_modules and len(config.target_modules) == 14
    assert "llama_lora" in model.backbone.layers[0].mlp.gate_proj.loras
    assert set(model.heads) == {"default", "llama_lora"}
    assert not torch.equal(model.heads["llama_lora"][0].weight, model.heads["default"][0].weight)
    assert torch.equal(outputs(model, ref, "llama")["logits"], base)  # not active: nothing changed


@pytest.mark.parametrize("change, message", [
    ({"modules_to_save": ["classifier"]}, r"modules_to_save \['classifier'\] is not a prediction head adapterctl maps"),
    ({"bias": "lora_only"}, "PEFT's bias='lora_only' is not supported"),
    ({"use_qalora": True}, "PEFT's use_qalora=True is not supported"),
    ({"init_lora_weights": "pissa_niter_4"}, "path_initial_model_for_weight_conversion"),
    ({"peft_type": "VERA", "r": 4}, "PEFT's VeRA was saved without its random projections"),
    ({}, "adapts embeddings.word_embeddings, which is not a Linear layer"),
])
def test_peft_features_we_cannot_follow_are_named(change, message, tmp_path):
    """bert_lora_list changed: a sequence classifier's head onto a BertModel that has none, PEFT's
    bias, a LoRA on the word embeddings."""
    model = AdapterModel.from_pretrained(BERT).eval()
    folder = tmp_path / "lora"
    shutil.copytree(PEFT / "bert_lora_list", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    extra = ({"base_model.model.classifier.weight": torch.zeros(2, 32)} if "modules_to_save" in change else
             {} if change else {"base_model.model.embeddings.word_embeddings.lora_A.weight": torch.zeros(4, 99)})
    save_file({**load_file(folder / "adapter_model.safetensors"), **extra}, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterConfigError, match=message):
        model.load_adapter(folder)
    assert not model.adapters_config and not any(".loras." in k for k in model.state_dict())


@pytest.mark.parametrize("fields, message", [
    (dict(rank_pattern={"value": 0}), "rank_pattern maps module-path patterns to positive numbers"),
    (dict(alpha_pattern={"(value": 2}), "alpha_pattern key '.value' is not a regular expression"),
    (dict(feedforward_modules=["output.dense"]), "feedforward_modules choose where an ungated IA3"),
    (dict(target_modules="query"), "target_modules=.query. must be a list"),
    (dict(target_modules=[3]), "target_modules must be a list of module names"),
    (dict(target_modules=["query"], leave_out=[0]), "drop leave_out"),
    (dict(dora_variant="hf"), "unknown dora_variant 'hf'"),
])
def test_bad_peft_fields_are_one_line_errors(fields, message):
    with pytest.raises(AdapterConfigError, match=message):
        AdapterModel.from_pretrained(BERT).add_adapter("x", "lora", **fields)


def test_the_cli_reaches_the_peft_fields():
    from adapterctl.core.config import load_config
    from adapterctl.run import settings
    from adapterctl.run.build import adapter_overrides

    cfg = settings.load("train", ["adapter=lora", "adapter.rank_pattern={value:4}", "adapter.target_modules=[query,value]"])
    config = load_config(cfg.adapter.preset, **adapter_overrides(cfg.adapter))
    assert (config.rank_pattern, config.alpha_pattern, config.target_modules) == ({"value": 4}, {}, ("query", "value"))


def test_target_modules_that_name_nothing_are_refused():
    model = AdapterModel.from_pretrained(BERT)
    with pytest.raises(AdapterConfigError, match=r"target_modules \['gate_proj'\] name no Linear module"):
        model.add_adapter("x", "lora", target_modules=["gate_proj"])


OURS = {"lo": "bert", "do": "bert", "ia": "bert", "tm": "bert", "g2lo": "gpt2", "g2ia": "gpt2",
        "ll": "llama", "llh": "llama", "sc": "bert_seqcls", "nx": "neox", "ve": "bert",
        "ad": "bert"}  # adapter -> backbone
HEADED = {"llh", "sc"}  # with their own head, written as modules_to_save
TASK_MODELS = {"bert": "AutoModel", "bert_seqcls": "AutoModelForSequenceClassification"}  # else *ForCausalLM


def ours(tmp_path) -> dict:
    """Trained-looking adapters saved as PEFT, by backbone. BERT: a LoRA (q, v, intermediate) with
    per-module ranks and alphas, PEFT's DoRA, an IA3 scaling output.dense's input. GPT-2: a LoRA
    on q and v (two slices of the fused c_attn) and the MLP, an IA3 on k, v and the MLP; GPT-NeoX:
    a LoRA on q and v (fused per head). By
    target_modules: other modules in each BERT layer, and Llama's gate_proj. With a trained copy
    of the checkpoint's head (modules_to_save): Llama's lm_head, BERT's classifier. PEFT's own
    VeRA fixture and its AdaLoRA after rank allocation (a LoRA of per-module ranks, one module
    left out), loaded and written back."""
    models = {b: AdapterModel.from_pretrained(BACKBONES[b]).eval() for b in set(OURS.values())}
    models["bert"].add_adapter("tm", "lora", target_modules=["layer.0.attention.self.query", "layer.1.output.dense",
                                                            "pooler.dense"])
    models["llama"].add_adapter("ll", "lora", r=2, target_modules=["gate_proj", "q_proj"], rank_pattern={"q_proj": 3})
    models["bert"].add_adapter("lo", "lora", r=4, alpha=16, intermediate_lora=True, leave_out=[0],
                               rank_pattern={"value": 2}, alpha_pattern={"intermediate.dense": 3})
    models["bert"].add_adapter("do", "dora", r=2, dora_variant="peft")
    models["bert"].add_adapter("ia", "ia3", alpha=2, intermediate_lora=False, output_lora=True,
                               feedforward_modules=["output.dense"])
    models["gpt2"].add_adapter("g2lo", "lora", r=2, alpha=6, intermediate_lora=True)
    models["gpt2"].add_adapter("g2ia", "ia3")
    models["neox"].add_adapter("nx", "lora", r=2)  # q and v: slices of each head's part of query_key_value
    for name, backbone in (("llh", "llama"), ("sc", "bert_seqcls")):
        models[backbone].add_adapter(name, "lora", r=2, output_lora=True)
        models[backbone].add_head(name, set_active=False, **models[backbone].heads["default"].config)
    for model in models.values():
        perturb(model, ".loras.", std=0.3)
        perturb(model, "heads.llh", std=0.3)
        perturb(model, "heads.sc", std=0.3)
    models["bert"].load_adapter(PEFT / "bert_vera", load_as="ve")  # PEFT's VeRA: diagonal vera_B, vera_D
    models["bert"].load_adapter(PEFT / "bert_adalora_allocated", load_as="ad")
    for name, backbone in OURS.items():
        models[backbone].save_adapter(tmp_path / name, name, format="peft")
    return models


def our_outputs(models, ref) -> dict:
    """Each adapter's hidden states, the logits of a task model (``<name>.logits``, its own head's
    where it has one), on BertModel the pooler's output (``<name>.pooler``)."""
    expected = {}
    for name, backbone in OURS.items():
        with models[backbone].adapter_setup(name):
            out = outputs(models[backbone], ref, backbone)
        expected[name] = out["hidden"]
        for other in ("logits", "pooler"):
            if other in out:
                expected[f"{name}.{other}"] = out[other]
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
    assert gpt2["fan_in_fan_out"] and gpt2["rank_pattern"] == {f"transformer.h.{i}.attn.c_attn": 4 for i in (0, 1)}
    assert gpt2["task_type"] == "CAUSAL_LM" and gpt2["modules_to_save"] is None  # the checkpoint is a GPT2LMHeadModel
    assert load_file(tmp_path / "g2lo" / "adapter_model.safetensors")[
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].shape == (96, 4)
    assert json.loads((tmp_path / "tm" / "adapter_config.json").read_text())["target_modules"] == [
        "pooler.dense", "encoder.layer.0.attention.self.query", "encoder.layer.1.output.dense"]
    for name in OURS:
        assert bool(json.loads((tmp_path / name / "adapter_config.json").read_text())["modules_to_save"]) == (name in HEADED)
    headed = json.loads((tmp_path / "llh" / "adapter_config.json").read_text())
    assert (headed["task_type"], headed["modules_to_save"]) == ("CAUSAL_LM", ["lm_head"])
    assert "model.layers.0.mlp.up_proj" in headed["target_modules"]  # relative to the LlamaForCausalLM
    expected = our_outputs(models, ref)
    fresh = {b: AdapterModel.from_pretrained(BACKBONES[b]).eval() for b in set(OURS.values())}
    for name, backbone in OURS.items():
        fresh[backbone].load_adapter(tmp_path / name, load_as=f"{name}2")
        with fresh[backbone].adapter_setup(f"{name}2"):
            out = outputs(fresh[backbone], ref, backbone)
        assert (out["hidden"] - expected[name]).abs().max().item() <= 1e-5
        for other in ("logits", "pooler"):
            if f"{name}.{other}" in expected:
                assert (out[other] - expected[f"{name}.{other}"]).abs().max().item() <= 1e-5
    models["bert"].add_adapter("d", "dora")
    with pytest.raises(AdapterConfigError, match="cannot be written as a PEFT folder"):
        models["bert"].save_adapter(tmp_path / "d", "d", format="peft")
    models["bert"].add_adapter("v", "vera")
    perturb(models["bert"], ".loras.v.", std=0.3)  # trained the AdapterHub way: full vera_B, vera_D
    with pytest.raises(AdapterConfigError, match="are no longer diagonal"):
        models["bert"].save_adapter(tmp_path / "v", "v", format="peft")


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


def test_peft_loads_our_folders_with_our_outputs(ref, tmp_path):
    """PEFT itself (peft==0.21.0, the test extra) loads each folder we wrote onto the transformers
    model of its backbone's checkpoint (``*ForCausalLM`` for the decoders) and gives our outputs."""
    import transformers
    from peft import PeftModel

    expected = our_outputs(ours(tmp_path), ref)
    for name, backbone in OURS.items():
        auto = getattr(transformers, TASK_MODELS.get(backbone, "AutoModelForCausalLM"))
        model = PeftModel.from_pretrained(auto.from_pretrained(BACKBONES[backbone]), tmp_path / name).eval()
        with torch.no_grad():
            out = model(input_ids=ref[f"inputs.{backbone}.input_ids"],
                        attention_mask=ref[f"inputs.{backbone}.attention_mask"], output_hidden_states=True)
        got = {name: out.hidden_states[-1], f"{name}.logits": getattr(out, "logits", None),
               f"{name}.pooler": getattr(out, "pooler_output", None)}
        for key in (k for k in got if k in expected):
            assert (got[key] - expected[key]).abs().max().item() <= 1e-5, key
