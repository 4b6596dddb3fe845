"""``adapterctl export run=... merge=true``: a plain transformers checkpoint with the run's adapter
merged in, which ``AutoModel.from_pretrained`` loads with the adapter's outputs."""

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, BertConfig, BertModel, LlamaForCausalLM

from adapterctl import AdapterConfigError, AdapterModel
from adapterctl.run import export
from conftest import batch, llama_config, perturb


def fake_run(tmp_path, preset, backbone=None, head="task"):
    """A run folder as train writes it: run.json naming the backbone (saved to ``tmp_path``), the
    adapter ``task`` with its head, or none where ``head`` is the checkpoint's (an LM task's)."""
    torch.manual_seed(0)
    (backbone or BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=37, vocab_size=99))).save_pretrained(tmp_path / "backbone")
    model = AdapterModel.from_pretrained(tmp_path / "backbone").eval()
    model.add_adapter("task", preset, intermediate_lora=True)
    if head == "task":
        model.add_head("task", num_labels=2)
    perturb(model, ".task.", std=0.3)
    run = tmp_path / "run"
    model.save_adapter(run / "adapters" / "task", "task")
    (run / "run.json").write_text(json.dumps({"backbone": {"path": str(tmp_path / "backbone")}, "task": "x",
                                              "adapter": {"dir": "adapters/task"}}))
    with torch.no_grad(), model.adapter_setup("task", head=head):
        out = model(**batch())
    return run, out


@pytest.mark.parametrize("preset", ["lora", "ia3", "dora", "vera"])
def test_merged_checkpoint_gives_the_adapters_outputs(tmp_path, preset, capsys):
    run, expected = fake_run(tmp_path, preset)
    assert export.main([f"run={run}", f"out={tmp_path / 'merged'}", "merge=true"]) == 0
    assert "AutoModel.from_pretrained" in capsys.readouterr().out
    plain = AutoModel.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k or "shared_parameters" in k for k in plain.state_dict())
    with torch.no_grad():
        hidden = plain(**batch()).last_hidden_state
    assert (hidden - expected.hidden_states).abs().max().item() <= 1e-5
    reloaded = AdapterModel.from_pretrained(tmp_path / "merged").eval()
    reloaded.load_head(tmp_path / "merged", load_as="task")
    with torch.no_grad():
        assert (reloaded(**batch(), head="task").logits - expected.logits).abs().max().item() <= 1e-5


def test_merging_what_cannot_merge_is_a_one_line_error(tmp_path):
    run, _ = fake_run(tmp_path, "lora")
    with pytest.raises(AdapterConfigError, match="merge=true or merge=false"):
        export.main([f"run={run}", "merge=yes"])
    with pytest.raises(AdapterConfigError, match="without a Hub card; drop license"):
        export.main([f"run={run}", "merge=true", "license=mit"])
    model = AdapterModel.from_pretrained(tmp_path / "backbone")
    model.add_adapter("task", "pfeiffer")
    model.save_adapter(run / "adapters" / "task", "task", overwrite=True)
    with pytest.raises(AdapterConfigError, match="cannot be merged into the backbone's weights"):
        export.main([f"run={run}", f"out={tmp_path / 'merged'}", "merge=true"])
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("tied", [False, True])
def test_a_decoder_keeps_its_lm_head_in_the_merged_checkpoint(tmp_path, tied):
    """A *ForCausalLM backbone (an LM task's run) exports as one: AutoModelForCausalLM gives the
    merged model's logits, the LM head saved once even where it is the embeddings' matrix."""
    config = llama_config()
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    run, expected = fake_run(tmp_path, "lora", LlamaForCausalLM(config), head="default")
    assert export.main([f"run={run}", f"out={tmp_path / 'merged'}", "merge=true"]) == 0
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert type(lm) is LlamaForCausalLM and not any("lora" in k for k in lm.state_dict())
    assert (lm.lm_head.weight is lm.model.embed_tokens.weight) == tied
    with torch.no_grad():
        assert (lm(**batch()).logits - expected.logits).abs().max().item() <= 1e-5
