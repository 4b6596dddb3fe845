"""LoRA, IA3 and the Llama family against outputs AdapterHub's ``adapters`` 1.3.0 computed
(tests/fixtures/adapterhub_methods and adapterhub_decoders, made in a separate environment;
their semantics are written up in tests/fixtures/adapterhub/FACTS.md)."""

import contextlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterModel, Average, BatchSplit, Parallel, Stack

FIXTURES = Path(__file__).parent / "fixtures"
METHODS = FIXTURES / "adapterhub_methods"
DECODERS = FIXTURES / "adapterhub_decoders"
TOL = 1e-5
LORAS = ["lora", "fulllora", "scalelora", "ia3", "la", "lb"]


def close(a, b):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= TOL, diff


def run(model, ref, setup=None):
    with torch.no_grad(), model.adapter_setup(setup) if setup is not None else contextlib.nullcontext():
        return model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])


@pytest.fixture(scope="module")
def bert():
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    for name in LORAS + ["pf"]:
        model.load_adapter(METHODS / "safetensors" / name)
    return model, ref


@pytest.mark.parametrize("name", LORAS)
def test_their_lora_and_ia3_adapters_give_their_outputs(bert, name):
    model, ref = bert
    out = run(model, ref, name)
    close(out.hidden_states, ref[f"{name}.hidden"])
    close(out.logits, ref[f"{name}.logits"])


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_their_bin_files_load_too(name):
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    model.load_adapter(METHODS / "bin" / name, set_active=True)
    close(run(model, ref).logits, ref[f"{name}.logits"])


def test_compositions_of_loras_follow_adapterhub(bert):
    model, ref = bert
    out = run(model, ref, Stack("la", "lb"))
    close(out.hidden_states, ref["stack_la_lb.hidden"])
    close(out.logits, ref["stack_la_lb.logits"])
    out = run(model, ref, Parallel("la", "lb"))
    close(out.hidden_states, ref["parallel_la_lb.hidden"])
    close(out.logits[0], ref["parallel_la_lb.logits.0"])
    close(out.logits[1], ref["parallel_la_lb.logits.1"])
    close(run(model, ref, BatchSplit("la", "lb", batch_sizes=[1, 1])).hidden_states, ref["batchsplit_la_lb.hidden"])
    # AdapterHub's Average divides the weighted sum by the number of adapters once more; ours is
    # the weighted mean, so its weights halved (not normalized again) give AdapterHub's result.
    for key, weights in (("average_la_lb", [0.5, 0.5]), ("averagew_la_lb", [0.3, 0.7])):
        half = Average("la", "lb", weights=[w / 2 for w in weights], normalize_weights=False)
        close(run(model, ref, half).hidden_states, ref[f"{key}.hidden"])


@pytest.mark.parametrize("name", ["lora", "fulllora", "scalelora", "ia3", "la"])
def test_merging_keeps_the_unmerged_outputs_and_reset_restores_them(name):
    """AdapterHub's merge leaves biases alone, so its merged IA3 and scale-mode LoRA differ from
    its unmerged ones on layers with a bias (FACTS.md); ours scale the bias too."""
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    model.load_adapter(METHODS / "safetensors" / name, set_active=True)
    model.merge_adapter(name)
    close(run(model, ref).logits, ref[f"{name}.logits"])
    model.reset_adapter()
    close(run(model, ref).hidden_states, ref[f"{name}.reset.hidden"])


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_decoder_adapters_heads_and_generation_follow_adapterhub(family):
    ref = load_file(DECODERS / family / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(DECODERS / family / "backbone").eval()
    assert model.active_head == "default"  # the checkpoint's LM head
    close(run(model, ref).logits, ref["base.logits"])
    for name in ("sb", "dsb", "lora", "ia3"):
        model.load_adapter(DECODERS / family / "safetensors" / name, with_head=False)
        out = run(model, ref, name)
        close(out.hidden_states, ref[f"{name}.hidden"])
        close(out.logits, ref[f"{name}.logits"])
    if family != "qwen2":  # the plugin model has no head of AdapterHub's own
        model.load_adapter(DECODERS / family / "safetensors" / "sb", load_as="sb_head")
        with torch.no_grad(), model.adapter_setup("sb_head"):
            close(run(model, ref).logits, ref["sb.head_logits"])
    for name in ("base", "sb", "lora"):
        # AdapterHub's Llama and Mistral cache is broken (FACTS.md): its no-cache tokens are the reference
        with torch.no_grad(), model.adapter_setup(None if name == "base" else name, head="default"):
            tokens = model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=6,
                                    min_new_tokens=6, do_sample=False, num_beams=1, use_cache=True, pad_token_id=0)
        assert torch.equal(tokens, ref[f"generate.{name}.nocache"]), name
