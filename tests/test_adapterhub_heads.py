"""Heads under composition blocks, a fusion head saved under a name of the user's choosing, and
a BatchSplit setup file: against what AdapterHub's ``adapters`` 1.3.0 computed and wrote
(tests/fixtures/adapterhub_heads, its README lists the setups and the rules)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterModel, Average, BatchSplit, Fuse, Parallel, Stack

FIXTURES = Path(__file__).parent / "fixtures"
HEADS = FIXTURES / "adapterhub_heads"
TOL = 1e-5


def close(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= TOL


def model_with(*names, files="safetensors"):
    model = AdapterModel.from_pretrained(FIXTURES / "adapterhub_methods" / "backbone").eval()
    for name in names:
        model.load_adapter(HEADS / files / name)
    return model


@pytest.fixture(scope="module")
def loaded():
    return model_with("ta", "tb", "tc", "td"), load_file(HEADS / "reference_outputs.safetensors")


def outputs(model, ref, setup):
    model.set_active_adapters(setup)
    with torch.no_grad():
        return model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])


def test_batch_split_runs_each_childs_head_on_its_rows(loaded):
    """Before: the one active head ran on every row, so row 1 got head ta's logits, not tb's."""
    model, ref = loaded
    out = outputs(model, ref, BatchSplit("ta", "tb", batch_sizes=[1, 1]))
    assert model.active_head == BatchSplit("ta", "tb", batch_sizes=[1, 1])
    close(out.hidden_states, ref["batchsplit_ta_tb.hidden"])
    close(out.logits, ref["batchsplit_ta_tb.logits"])  # one tensor, as AdapterHub's MultiHeadOutput.logits
    close(out.logits[:1], ref["batchsplit_ta_tb.logits.0"])
    close(out.logits[1:], ref["batchsplit_ta_tb.logits.1"])


def test_a_stack_inside_batch_split_gets_its_last_adapters_head(loaded):
    """AdapterHub's head rule (each child's last adapter); its hidden states differ from ours on
    purpose (core/composer.py: it normalizes a nested Stack's rows twice), so each row is checked
    against that child run alone here."""
    model, ref = loaded
    out = outputs(model, ref, BatchSplit(Stack("ta", "tb"), "tc", batch_sizes=[1, 1]))
    assert model.active_head == BatchSplit("tb", "tc", batch_sizes=[1, 1])
    for row, setup in enumerate([Stack("ta", "tb"), "tc"]):
        alone = outputs(model, ref, setup)
        close(out.logits[row:row + 1], alone.logits[row:row + 1])


def test_batch_split_heads_of_different_widths_give_one_logits_entry_per_head(loaded):
    model, ref = loaded
    out = outputs(model, ref, BatchSplit("ta", "td", batch_sizes=[1, 1]))
    assert isinstance(out.logits, list) and len(out.logits) == 2  # AdapterHub's head_outputs
    close(out.logits[0], ref["batchsplit_ta_td.logits.0"])
    close(out.logits[1], ref["batchsplit_ta_td.logits.1"])


def test_batch_split_heads_train_on_their_rows_labels(loaded):
    model, ref = loaded
    model.set_active_adapters(BatchSplit("ta", "tb", batch_sizes=[1, 1]))
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"], labels=labels)
        expected = sum(torch.nn.functional.cross_entropy(out.logits[i:i + 1], labels[i:i + 1]) for i in range(2))
    assert torch.allclose(out.loss, expected)


@pytest.mark.parametrize("key, setup", [("ta", "ta"), ("stack_ta_tb", Stack("ta", "tb"))])
def test_a_name_or_a_stack_picks_the_last_adapters_head(loaded, key, setup):
    model, ref = loaded
    model.active_head = "td"
    out = outputs(model, ref, setup)
    assert model.active_head == {"ta": "ta", "stack_ta_tb": "tb"}[key]
    close(out.hidden_states, ref[f"{key}.hidden"])
    close(out.logits, ref[f"{key}.logits"])


def test_average_keeps_the_active_head_as_adapterhub_does(loaded):
    """facts.json head_rules: no head is derived for Average (our weighted mean differs from its
    outputs on purpose, core/composer.py)."""
    model, ref = loaded
    model.active_head = "td"
    assert outputs(model, ref, Average("ta", "tb")).logits.shape == (2, 2) and model.active_head == "td"


def test_parallel_runs_each_head_on_its_copy(loaded):
    model, ref = loaded
    out = outputs(model, ref, Parallel("ta", "tb"))
    assert model.active_head == ["ta", "tb"]
    close(out.hidden_states, ref["parallel_ta_tb.hidden"])
    for i in range(2):
        close(out.logits[i], ref[f"parallel_ta_tb.logits.{i}"])


@pytest.mark.parametrize("files", ["safetensors", "bin"])
def test_a_fusion_head_loads_under_the_name_its_file_gives(files):
    """``save_adapter_fusion(dir, Fuse("ta","tb","tc"), with_head="sentiment")``: before, loading
    failed with "weights do not match the config" (the head was looked for as ``ta,tb,tc``)."""
    model, ref = model_with("ta", "tb", "tc", files=files), load_file(HEADS / "reference_outputs.safetensors")
    assert json.loads((HEADS / files / "fusion" / "head_config.json").read_text())["name"] == "sentiment"
    assert model.load_fusion(HEADS / files / "fusion") == "ta,tb,tc"
    assert sorted(model.heads) == ["sentiment", "ta", "tb", "tc"]  # facts.json: heads_after_load
    model.active_head = "sentiment"
    out = outputs(model, ref, Fuse("ta", "tb", "tc"))
    close(out.hidden_states, ref["fuse.hidden"])
    close(out.logits, ref["fuse.logits"])
    again = model_with("ta", "tb", "tc", files=files)
    again.load_fusion(HEADS / files / "fusion", load_as="ta,tb,tc")  # load_as names the head too, as theirs
    assert "ta,tb,tc" in again.heads and "sentiment" not in again.heads


def test_their_batch_split_setup_file_loads_with_its_head_setup(tmp_path):
    model, ref = model_with(), load_file(HEADS / "reference_outputs.safetensors")
    setup, head_setup = model.load_adapter_setup(HEADS / "setup_batchsplit", set_active=True)
    assert setup == head_setup == model.active_head == BatchSplit("ta", "tb", batch_sizes=[1, 1])
    with torch.no_grad():
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
    close(out.logits, ref["batchsplit_ta_tb.logits"])
    model.save_adapter_setup(tmp_path / "setup")
    saved = json.loads((tmp_path / "setup" / "adapter_setup.json").read_text())
    theirs = json.loads((HEADS / "setup_batchsplit" / "adapter_setup.json").read_text())
    assert saved["head_setup"] == theirs["head_setup"]
