"""ReFT (loreft, noreft, direft): AdapterHub's outputs and files on a tiny BERT and tiny T5 / BART /
mBART (both stacks), the positions it acts on (left and right padding, prefix and suffix, tied
units), cached generation on a tiny Llama and the encoder-decoders, freezing, counts and errors."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterConfigError, AdapterModel, Parallel, Stack
from conftest import batch, perturb, tiny_llama, tiny_model
from test_prefix_tuning import (SEQ2SEQ, close, greedy, run, seq2seq, seq2seq_outputs,  # the same helpers
                                seq2seq_stepwise)

METHODS = Path(__file__).parent / "fixtures" / "adapterhub_methods"


def test_their_loreft_noreft_and_direft_give_their_outputs():
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    for name in ("loreft", "noreft"):
        model.load_adapter(METHODS / "safetensors" / name)
        out = run(model, ref, name)
        close(out.hidden_states, ref[f"{name}.hidden"])
        close(out.logits, ref[f"{name}.logits"])
    model.load_adapter(METHODS / "bin" / "loreft", load_as="binreft", with_head=False)
    close(run(model, ref, "binreft").hidden_states, ref["loreft.hidden"])
    # AdapterHub does not save DiReFT's subtract_projection: its file reloads as NoReFT (there too)
    model.load_adapter(METHODS / "safetensors" / "direft", with_head=False)
    assert model.adapters_config["direft"].subtract_projection
    model.add_adapter("di", "direft")
    for ours, theirs in zip(model.adapter_modules("di"), model.adapter_modules("direft")):
        ours.load_state_dict(theirs.state_dict())
    close(run(model, ref, "di").hidden_states, ref["direft.hidden"])


def test_saved_with_adapterhubs_names_and_loaded_back_exactly(tmp_path):
    model = tiny_model()
    model.add_adapter("d", "direft", dropout=0.0, set_active=True)
    perturb(model, ".refts.d.", std=0.3)
    inputs = batch()
    before = run(model, inputs).hidden_states
    model.save_adapter(tmp_path / "d", "d")
    keys = set(load_file(tmp_path / "d" / "adapter.safetensors"))
    assert "bert.encoder.layer.1.reft_layer.refts.d.units.1.learned_source.weight" in keys
    assert "bert.encoder.layer.1.reft_layer.refts.d.units.1.projection.weight" in keys
    fresh = tiny_model()
    fresh.load_adapter(tmp_path / "d", set_active=True)  # subtract_projection is saved: a DiReFT again
    assert fresh.adapters_config["d"].placement_name() == "direft"
    assert torch.equal(run(fresh, inputs).hidden_states, before)


@pytest.mark.parametrize("tied", [False, True])
def test_only_the_first_and_last_real_tokens_change_after_a_layer(tied):
    """One layer, right and left padding: the intervened positions are the real tokens'."""
    model = tiny_model()
    model.add_adapter("r", "noreft", layers=[1], prefix_positions=2, suffix_positions=1, tied_weights=tied,
                      dropout=0.0, set_active=True)
    perturb(model, ".refts.r.", std=0.5)
    assert len(model.adapter_modules("r")) == 1 and len(model.adapter_modules("r")[0].units) == (1 if tied else 2)
    inputs = batch(rows=2, length=7)  # row 1: 4 real tokens, then padding
    for flip in (False, True):
        rows = {k: v.flip(1) for k, v in inputs.items()} if flip else inputs
        out = run(model, rows).hidden_states
        with torch.no_grad(), model.adapter_setup(None):
            base = model(**rows).hidden_states
        changed = (out - base).abs().amax(-1) > 1e-6
        real = rows["attention_mask"][1].nonzero().flatten().tolist()
        assert changed[0].nonzero().flatten().tolist() == [0, 1, 6]
        assert changed[1].nonzero().flatten().tolist() == [real[0], real[1], real[-1]]


def test_cached_generation_equals_generation_without_a_cache():
    """Prefix positions are intervened on when the prompt is computed; later steps of a cached
    generation hold none of them, and their cached keys and values are the intervened ones."""
    model = tiny_llama(causal_lm=True)
    model.add_adapter("r", "noreft", dropout=0.0, set_active=True)  # (random values in an orthogonal
    # parametrization's "original" can give a zero projection; AdapterHub's loreft covers that one)
    perturb(model, ".refts.r.", std=0.5)
    prompt = {k: v.flip(1) for k, v in batch(rows=2, length=6).items()}  # left padding
    with torch.no_grad():
        tokens = [model.generate(**prompt, max_new_tokens=5, do_sample=False, use_cache=c, pad_token_id=1)
                  for c in (True, False)]
        logits = run(model, prompt).logits
        with model.adapter_setup(None):
            bare = model(**prompt).logits
    assert torch.equal(tokens[0], tokens[1])
    assert (logits[:, -1] - bare[:, -1]).abs().max() > 1e-3  # the last position feels the intervention


def test_stacked_with_another_method_trained_alone_and_counted_as_adapterhub_does():
    model = tiny_model()
    model.add_adapter("r", "loreft")
    model.add_adapter("l", "lora")
    with pytest.raises(AdapterConfigError, match="reft cannot run inside Parallel"):
        model.set_active_adapters(Parallel("r", "l"))
    model.add_adapter("s", "noreft")
    with pytest.raises(AdapterConfigError, match="runs 2 ReFT adapters"):
        run(model, batch(), Stack("r", "s"))
    model.train_adapter(Stack("l", "r"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".refts.r." in n or ".loras.l." in n for n in trainable)
    for name in ("loreft", "direft"):  # AdapterHub's count on bert-base: 12 x 2 x (768 + 1 + 768) = 36,888
        model.add_adapter(f"count_{name}", name)
    rows = {r["name"]: r["params"] for r in model.adapter_summary(as_dict=True)}
    assert rows["count_loreft"] == rows["count_direft"] == 2 * 2 * (32 + 1 + 32)


def test_bad_reft_configs_are_one_line_errors():
    model = tiny_model()
    with pytest.raises(AdapterConfigError, match="needs prefix_positions or suffix_positions"):
        model.add_adapter("r", "loreft", prefix_positions=0)
    with pytest.raises(AdapterConfigError, match="layers must be 'all' or a list"):
        model.add_adapter("r", "loreft", layers="some")
    with pytest.raises(AdapterConfigError, match="r must be an integer >= 1"):
        model.add_adapter("r", "loreft", r=0)


@pytest.mark.parametrize("family", ["t5", "bart", "mbart"])
def test_encoder_decoder_refts_of_adapterhub_give_its_outputs_and_tokens(family):
    """Both stacks' layers, numbered on across them (noreft: layers [0, 3] = the encoder's first and
    the decoder's second). Greedy tokens with a cache equal AdapterHub's uncached ones
    (its cached path intervenes on every new token; module docstring of methods/reft/model.py)."""
    model, inputs, ref = seq2seq(family)
    model.load_adapter(SEQ2SEQ / family / "methods" / "safetensors" / "loreft", with_head=False)
    model.load_adapter(SEQ2SEQ / family / "methods" / "bin" / "noreft", with_head=False)
    for name in ("loreft", "noreft"):
        for key, value in seq2seq_outputs(model, inputs, name).items():
            close(value, ref[f"{name}.{key}"])
    assert torch.equal(greedy(model, inputs, "loreft", family), ref["generate.loreft.nocache"])
    stacks = {"t5": ("transformer.encoder.block", "transformer.decoder.block"),
              "bart": ("model.encoder.layers", "model.decoder.layers")}.get(family, ("model.encoder.layers",
                                                                                    "model.decoder.layers"))
    placed = {n.split(".reft_layer")[0] for n, _ in model.named_parameters() if ".refts.noreft." in n}
    assert placed == {f"{stacks[0]}.0", f"{stacks[1]}.1"}


def test_encoder_decoder_reft_decodes_the_same_step_by_step_with_a_kv_cache():
    """The decoder's first positions reach later cached steps too (its first token comes alone)."""
    model, inputs, _ = seq2seq("mbart")
    model.load_adapter(SEQ2SEQ / "mbart" / "methods" / "bin" / "loreft", with_head=False)
    model.set_active_adapters("loreft")
    full, steps, _ = seq2seq_stepwise(model, inputs, first=1)
    close(steps, full)


def test_encoder_decoder_suffix_reft_uses_the_decoders_own_last_token_and_reloads(tmp_path):
    """AdapterHub fails here (its decoder reuses the encoder's last positions: facts.json); ours acts
    on each stack's own last real token, and saves under AdapterHub's names."""
    model, inputs, ref = seq2seq("bart")
    model.load_adapter(SEQ2SEQ / "bart" / "methods" / "safetensors" / "sufreft", with_head=False)
    model.add_adapter("dec", "noreft[prefix_positions=0, suffix_positions=1, layers=[2], dropout=0.0]")  # decoder's first
    perturb(model, ".refts.dec.", std=0.3)
    seen = []
    for stack in (model.backbone.encoder, model.backbone.decoder):
        stack.layers[0].register_forward_hook(lambda m, args, out: seen.append(out[0] if isinstance(out, tuple) else out))
    base = seq2seq_outputs(model, inputs, None)
    out = seq2seq_outputs(model, inputs, "sufreft")
    seq2seq_outputs(model, inputs, "dec")
    # encoder then decoder in each pass: base 0-1, sufreft 2-3, dec 4-5
    for before, after, mask in ((seen[0], seen[2], inputs["attention_mask"]),
                                (seen[1], seen[5], torch.ones_like(inputs["decoder_input_ids"]))):
        changed = (after - before).abs().amax(dim=-1) > 1e-6  # after the first layer: only each row's last real token
        last = mask.sum(dim=1) - 1
        assert torch.equal(changed, torch.nn.functional.one_hot(last, mask.shape[1]).bool())
    assert (out["logits"] - base["logits"]).abs().max() > 1e-3
    model.save_adapter(tmp_path / "s", "sufreft")
    theirs = load_file(SEQ2SEQ / "bart" / "methods" / "safetensors" / "sufreft" / "adapter.safetensors")
    assert load_file(tmp_path / "s" / "adapter.safetensors").keys() == theirs.keys()
    fresh, _, _ = seq2seq("bart")
    fresh.load_adapter(tmp_path / "s")
    close(seq2seq_outputs(fresh, inputs, "sufreft")["logits"], out["logits"], tol=0)
