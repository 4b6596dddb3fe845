"""Composition blocks against references computed by hand on tiny models, and Parallel on
encoder-decoders and in generate() against AdapterHub's outputs (fixtures/adapterhub_decoders).

The hand references run a bare copy of the backbone whose feed-forward output step
``LayerNorm(h + x)`` is replaced by the block's formula written out here, with the adapters'
own weights; pfeiffer adapters sit only at that step. One pfeiffer adapter at a site computes
``out = f(LN(h + x)) + h`` and the site returns ``LN(out + x)`` (AdapterHub's placement).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import (
    AdapterConfigError, AdapterModel, AdapterNotFoundError, Average, BatchSplit, Fuse, IncompatibleAdapterError, Parallel, Split,
    Stack,
)
from adapterctl.core.composition import parse_setup
from conftest import batch, perturb, tiny_backbone, tiny_model


def pfeiffer_model(names="abc", family="bert"):
    model = tiny_model(family)
    for n in names:
        model.add_adapter(n, "pfeiffer")
    perturb(model, ".adapters.")
    return model.eval()


def f(model, name, idx, t):
    """The bottleneck by hand: up(relu(down(t)))."""
    adapter = model.backbone.encoder.layer[idx].output.adapters[name]
    down, up = adapter.adapter_down[0], adapter.adapter_up
    return torch.relu(t @ down.weight.T + down.bias) @ up.weight.T + up.bias


@torch.no_grad()
def by_hand(site, inputs):
    """Last hidden state of a bare backbone whose FFN output step is ``site(idx, h, x, ln)``."""
    bare = tiny_backbone("bert")
    for idx, layer in enumerate(bare.encoder.layer):
        out = layer.output

        def forward(hidden_states, input_tensor, out=out, idx=idx):
            return site(idx, out.dense(hidden_states), input_tensor, out.LayerNorm)

        out.forward = forward
    return bare(**inputs).last_hidden_state


@torch.no_grad()
def hidden(model, setup, inputs, **kw):
    model.set_active_adapters(setup, **kw)
    return model(**inputs).hidden_states


def close(a, b):
    return (a - b).abs().max().item() <= 1e-5


def test_single_adapter_matches_hand_formula():
    model, inputs = pfeiffer_model(), batch()

    def site(i, h, x, ln):
        return ln(f(model, "a", i, ln(h + x)) + h + x)

    assert close(hidden(model, "a", inputs), by_hand(site, inputs))


def test_stack_applies_the_adapters_in_order():
    model, inputs = pfeiffer_model(), batch()

    def site(i, h, x, ln):
        for name in ("a", "b", "c"):  # each adapter: its pre step, then the bottleneck plus residual
            h = f(model, name, i, ln(h + x)) + h
        return ln(h + x)

    ours = hidden(model, Stack("a", "b", "c"), inputs)
    assert close(ours, by_hand(site, inputs))
    assert close(hidden(model, ["a", "b", "c"], inputs), ours)  # the seed's list shorthand
    assert not close(ours, hidden(model, Stack("c", "b", "a"), inputs))  # order matters


@pytest.mark.parametrize("weights", [None, [1.0, 3.0]])
def test_average_is_the_weighted_mean_of_outputs(weights):
    model, inputs = pfeiffer_model(), batch()
    w = [0.5, 0.5] if weights is None else [0.25, 0.75]

    def site(i, h, x, ln):
        t = ln(h + x)
        return ln(sum(wi * (f(model, n, i, t) + h) for wi, n in zip(w, "ab")) + x)

    assert close(hidden(model, Average("a", "b", weights=weights), inputs), by_hand(site, inputs))


def test_split_gives_each_adapter_its_positions():
    model, inputs = pfeiffer_model(), batch(length=9)

    def site(i, h, x, ln):
        t = ln(h + x)
        out = torch.cat([f(model, "a", i, t)[:, :4], f(model, "b", i, t)[:, 4:]], dim=1)
        return ln(out + h + x)

    assert close(hidden(model, Split("a", "b", splits=[4, 5]), inputs), by_hand(site, inputs))


def test_batch_split_rows_equal_each_adapter_alone_on_its_rows():
    model, inputs = pfeiffer_model(), batch(rows=3)
    ours = hidden(model, BatchSplit("a", Stack("b", "c"), batch_sizes=[1, 2]), inputs)
    assert close(ours[:1], hidden(model, "a", inputs)[:1])
    assert close(ours[1:], hidden(model, Stack("b", "c"), inputs)[1:])


def heads_model(family, preset):
    model = tiny_model(family)
    for i, n in enumerate("abc"):
        model.add_adapter(n, preset)
        model.add_classification_head(n, num_labels=2 + i)
    perturb(model, ".adapters.")
    perturb(model, "heads.", seed=1)
    return model.eval()


@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("preset", ["pfeiffer", "houlsby"])
def test_parallel_logits_equal_each_adapter_alone(family, preset):
    model, inputs = heads_model(family, preset), batch(rows=3)  # rows 1 and 2 are padded
    with torch.no_grad():
        model.set_active_adapters(Parallel("a", "b", "c"))
        out = model(**inputs)
        assert out.head == ["a", "b", "c"]
        for name, logits in zip("abc", out.logits):
            model.set_active_adapters(name)
            assert close(logits, model(**inputs).logits)


def test_parallel_of_stacks_with_adapterdrop_equals_each_stack_alone():
    model, inputs = heads_model("bert", "pfeiffer"), batch(rows=3)
    with torch.no_grad():
        model.set_active_adapters(Parallel(Stack("a", "b"), Stack("a", "c")), skip_layers=[0])
        parallel = model(**inputs).logits
        for stack, logits in zip((Stack("a", "b"), Stack("a", "c")), parallel):
            model.set_active_adapters(stack, skip_layers=[0])
            assert close(logits, model(**inputs).logits)


def test_skip_layers_removes_the_adapters_of_those_layers_only():
    model, inputs = pfeiffer_model(), batch()

    def site(i, h, x, ln):
        return ln(h + x) if i == 0 else ln(f(model, "a", i, ln(h + x)) + h + x)

    assert close(hidden(model, "a", inputs, skip_layers=[0]), by_hand(site, inputs))


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("setup, words", [
    (Fuse("a", Parallel("b", "c")), ["Parallel inside Fuse", "replicates the whole batch"]),
    (Fuse("a", Split("b", "c", splits=2)), ["Split inside Fuse", "each child must be one output"]),
    (Average("a", Fuse("b", "c")), ["Fuse inside Average", "fusion layer attends"]),
    (Stack("a", Stack("b", "c")), ["Stack inside Stack", "write it flat"]),
    (Parallel("a", Split("b", "c", splits=2)), ["Split inside Parallel", "both libraries"]),
])
def test_nesting_errors_say_which_nesting_and_why(setup, words):
    with pytest.raises(AdapterConfigError) as e:
        parse_setup(setup)
    for w in words:
        assert w in str(e.value)
    assert "may hold" in str(e.value)


def test_too_deep_nesting_is_refused():
    with pytest.raises(AdapterConfigError, match="too deep.*nested Stack may only hold adapter names"):
        parse_setup(Parallel(Stack("a", Fuse("b", "c")), "d"))


def test_batch_split_sizes_must_add_up_to_the_batch():
    model = pfeiffer_model()
    with pytest.raises(AdapterConfigError, match=r"add up to 3, but the batch has 4 rows"):
        hidden(model, BatchSplit("a", "b", batch_sizes=[1, 2]), batch(rows=4))
    with pytest.raises(AdapterConfigError, match="2 children but 3 batch_sizes"):
        BatchSplit("a", "b", batch_sizes=[1, 1, 1])


def test_split_sizes_must_add_up_to_the_sequence():
    with pytest.raises(AdapterConfigError, match="add up to 6, but the sequence has 9"):
        hidden(pfeiffer_model(), Split("a", "b", splits=3), batch(length=9))


def test_fusion_over_a_missing_adapter_or_fusion_is_refused():
    model = pfeiffer_model("ab")
    with pytest.raises(AdapterNotFoundError, match="no adapter named 'zz'"):
        model.add_fusion(["a", "zz"])
    with pytest.raises(AdapterNotFoundError, match=r"no fusion layer 'a,b'; add it first with add_fusion"):
        model.set_active_adapters(Fuse("a", "b"))


def test_fusing_adapters_of_another_hidden_size_or_family_is_refused(tmp_path):
    source = pfeiffer_model("ab")
    source.add_fusion(["a", "b"])
    for n in "ab":
        source.save_adapter(tmp_path / n, n)
    source.save_fusion(tmp_path / "a,b", "a,b")

    wider = tiny_model("bert")
    wider_config = wider.config.__class__(**{**wider.config.to_dict(), "hidden_size": 48})
    from transformers import AutoModel
    from adapterctl import AdapterModel

    wider = AdapterModel(AutoModel.from_config(wider_config))
    with pytest.raises(IncompatibleAdapterError, match="hidden size 32, but this model has 48"):
        wider.load_adapter(tmp_path / "a")
    with pytest.raises(IncompatibleAdapterError, match="hidden size 32"):
        wider.load_fusion(tmp_path / "a,b")
    with pytest.raises(IncompatibleAdapterError, match="trained for a bert model, but this model is distilbert"):
        tiny_model("distilbert").load_adapter(tmp_path / "a")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: BatchSplit("a", "b", batch_sizes=[3, -1]), r"batch_sizes \[3, -1\] must be whole numbers >= 0"),
        (lambda: BatchSplit("a", "b", batch_sizes=[1.5, 1.5]), "must be whole numbers"),
        (lambda: Split("a", "b", splits=[4, -1]), r"splits \[4, -1\] must be whole numbers >= 0"),
        (lambda: Average("a", "b", weights=[1.0, -1.0]), "sum to zero and cannot be normalized"),
        (lambda: Average("a", "b", weights=[1.0, float("nan")]), "must be finite numbers"),
        (lambda: Fuse("a", "a"), "Fuse names 'a' more than once"),
        (lambda: Fuse("a", Stack("b", "a")), "Fuse names 'a' more than once"),
        (lambda: parse_setup({"type": "BatchSplit", "children": [{"type": "single", "children": ["a"]}],
                              "kwargs": {"batch_sizes": [-2]}}), "must be whole numbers >= 0"),
    ],
)
def test_blocks_refuse_sizes_weights_and_names_that_cannot_work(make, message):
    """Before: a negative size sliced backwards (a traceback deep in a layer), zero-sum weights
    divided by zero (NaN outputs), a doubled fusion child gave the fusion layer a wrong width."""
    with pytest.raises(AdapterConfigError, match=message):
        make()


def test_average_weights_summing_to_zero_are_fine_unnormalized():
    model, inputs = pfeiffer_model(), batch()
    ours = hidden(model, Average("a", "b", weights=[1.0, -1.0], normalize_weights=False), inputs)
    assert torch.isfinite(ours).all()


ENC_DEC = Path(__file__).parent / "fixtures" / "adapterhub_decoders"  # make_parallel.py wrote parallel_*


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_parallel_on_encoder_decoders_gives_adapterhubs_rows_logits_and_tokens(family):
    """AdapterHub replicates the batch in the encoder and the decoder's inputs and masks to match:
    N*B rows, branch i on rows i*B.., the encoder's too; generate() gives N sequences per prompt.
    A bottleneck pair and a prefix pair of equal lengths are AdapterHub's in every row. Prefixes of
    different lengths: AdapterHub's shorter branch attends to its padding, ours equals it alone. A
    pair with different sites (sb: output only, dsb: both), which AdapterHub cannot run, equals each alone."""
    ref = load_file(ENC_DEC / family / "parallel_reference.safetensors")
    alone = {**load_file(ENC_DEC / family / "reference_outputs.safetensors"),
             **load_file(ENC_DEC / family / "methods" / "reference_outputs.safetensors")}
    inputs = {k: alone[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
    model = AdapterModel.from_pretrained(ENC_DEC / family / "backbone").eval()
    for name, where in {"sb": "safetensors/sb", "dsb": "safetensors/dsb", "sb2": "parallel/sb2", "pt": "methods/bin/pt",
                        "pt2": "parallel/pt2", "flatpt": "methods/bin/flatpt"}.items():
        model.load_adapter(ENC_DEC / family / where, load_as=name, with_head=False)
    encoded = []
    model.backbone.get_encoder().register_forward_hook(lambda m, args, out: encoded.append(out[0]))

    def run(setup):
        encoded.clear()
        with torch.no_grad(), model.adapter_setup(setup, head=["default", "default"]):
            out = model(**inputs)
        with torch.no_grad(), model.adapter_setup(setup, head="default"):
            tokens = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=6,
                                    min_new_tokens=6, do_sample=False, pad_token_id=int(family != "t5"))
        return {"enc_hidden": encoded[0], "hidden": out.hidden_states, "logits": torch.cat(out.logits)}, tokens

    for label, setup in (("bn", Parallel("sb", "sb2")), ("pt", Parallel("pt", "pt2"))):
        ours, tokens = run(setup)
        theirs = {**{k: ref[f"{label}.{k}"] for k in ("enc_hidden", "hidden")},
                  "logits": torch.cat([ref[f"{label}.logits.0"], ref[f"{label}.logits.1"]])}
        for key, value in ours.items():
            assert value.shape[0] == 4 and close(value, theirs[key]), (label, key)
        assert not close(ours["hidden"][:2], ours["hidden"][2:])  # the branches differ
        assert torch.equal(tokens, ref[f"generate.{label}"]), label
    ours, tokens = run(Parallel("pt", "flatpt"))
    for key in ("enc_hidden", "hidden"):
        assert close(ours[key][:2], ref[f"ptflat.{key}"][:2]) and close(ours[key][2:], alone[f"flatpt.{key}"]), key
    assert torch.equal(tokens[:2], ref["generate.ptflat"][:2]) and torch.equal(tokens[2:], alone["generate.flatpt.cache"])
    ours, _ = run(Parallel("sb", "dsb"))
    assert close(ours["hidden"][:2], alone["sb.hidden"]) and close(ours["hidden"][2:], alone["dsb.hidden"])


def test_parallel_generate_on_a_decoder_gives_each_adapters_tokens_with_and_without_a_cache():
    """The prompts are replicated once per branch before generation (AdapterHub's generate does the same)."""
    ref = load_file(ENC_DEC / "gpt2" / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(ENC_DEC / "gpt2" / "backbone").eval()
    for name in ("sb", "lora"):
        model.load_adapter(ENC_DEC / "gpt2" / "safetensors" / name, with_head=False)
    for use_cache in (True, False):
        with torch.no_grad(), model.adapter_setup(Parallel("sb", "lora"), head="default"):
            tokens = model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=6,
                                    min_new_tokens=6, do_sample=False, pad_token_id=0, use_cache=use_cache)
        assert torch.equal(tokens, torch.cat([ref["generate.sb.cache"], ref["generate.lora.cache"]])), use_cache
