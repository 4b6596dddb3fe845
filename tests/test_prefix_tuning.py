"""Prefix tuning (``prefix_tuning``, ``prefix_tuning_flat``): AdapterHub's outputs and files on a
tiny BERT, a tiny Llama and tiny T5 / BART / mBART (encoder, decoder and cross-attention prefixes),
the mask grown to match (padding, left padding), generation with a KV cache, compositions,
ejecting, gates, freezing and parameter counts."""

import contextlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig

from adapterctl import AdapterConfigError, AdapterModel, Average, BatchSplit, Parallel, Stack
from conftest import batch, perturb, tiny_llama, tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
METHODS = FIXTURES / "adapterhub_methods"
LLAMA = FIXTURES / "adapterhub_decoders" / "llama"
SEQ2SEQ = FIXTURES / "adapterhub_decoders"  # <family>/methods: make_encdec_methods.py
SMALL = "prefix_tuning[prefix_length=3, bottleneck_size=8]"


def close(a, b, tol=1e-5):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= tol, diff


def run(model, inputs, setup=None, **kwargs):
    with torch.no_grad(), model.adapter_setup(setup) if setup is not None else contextlib.nullcontext():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs)


def with_prefixes(model, *names, config=SMALL, std=0.5):
    for i, name in enumerate(names):
        model.add_adapter(name, config)
        perturb(model, f".prefix_tunings.{name}.", std=std, seed=i)
    return model


@pytest.fixture(scope="module")
def bert():
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    for name in ("pt", "flatpt"):
        model.load_adapter(METHODS / "bin" / name)  # AdapterHub saves prefix tuning only as .bin
    return model, ref


@pytest.mark.parametrize("name", ["pt", "flatpt"])
def test_their_prefix_adapters_give_their_outputs(bert, name):
    model, ref = bert
    out = run(model, ref, name)
    close(out.hidden_states, ref[f"{name}.hidden"])
    close(out.logits, ref[f"{name}.logits"])
    assert (out.hidden_states - ref["base.hidden"]).abs().max() > 1e-2  # not an identity


def test_ejecting_gives_the_same_outputs_and_a_flat_adapter_that_reloads(bert, tmp_path):
    model, ref = bert
    model.load_adapter(METHODS / "bin" / "pt", load_as="ejected", with_head=False)
    model.eject_prefix_tuning("ejected")
    assert model.adapters_config["ejected"].flat
    out = run(model, ref, "ejected")
    close(out.hidden_states, ref["ejectpt.hidden"])
    keys = {k for m in model.adapter_modules("ejected") for k in m.state_dict()}
    assert keys == {"self_prefix.control_trans"}
    model.save_adapter(tmp_path / "ejected", "ejected")  # safetensors: the pool is saved once
    model.delete_adapter("ejected")
    model.load_adapter(tmp_path / "ejected")
    close(run(model, ref, "ejected").hidden_states, ref["pt.hidden"])
    with pytest.raises(AdapterConfigError, match="'ejected' is a flat prefix already"):
        model.eject_prefix_tuning("ejected")
    model.delete_adapter("ejected")


def test_saved_with_adapterhubs_names_and_loaded_back_exactly(tmp_path):
    model = with_prefixes(tiny_model(), "p", config="prefix_tuning[prefix_length=3, bottleneck_size=8, use_gating=True]")
    perturb(model, ".prefix_gates.p.", std=0.5)
    inputs = batch()
    before = run(model, inputs, "p").hidden_states
    model.save_adapter(tmp_path / "p", "p")
    saved = load_file(tmp_path / "p" / "adapter.safetensors")
    assert set(saved) == {
        "bert.prefix_tuning.prefix_tunings.p.self_prefix.wte.weight",
        *(f"bert.prefix_tuning.prefix_tunings.p.self_prefix.control_trans.{i}.{w}" for i in (0, 2)
          for w in ("weight", "bias")),
        *(f"bert.encoder.layer.{i}.attention.self.prefix_tuning.prefix_gates.p.{w}" for i in (0, 1)
          for w in ("weight", "bias")),
    }
    fresh = tiny_model()
    fresh.load_adapter(tmp_path / "p")
    assert torch.equal(run(fresh, inputs, "p").hidden_states, before)
    fresh.delete_adapter("p")  # the last prefix gone: transformers' own attention again
    assert fresh.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("make", [tiny_model, tiny_llama], ids=["bert", "llama"])
def test_padding_is_masked_and_the_prefix_is_seen_by_every_row(make):
    """A padded row gives what it gives alone, unpadded (right padding for BERT, left for Llama,
    with positions counted from the first real token: prefix keys are not rotated, so a query
    sees them differently at another position)."""
    model = with_prefixes(make(), "p")
    inputs = batch(rows=2, length=7)
    positions = {}
    if make is tiny_llama:
        inputs = {k: v.flip(1) for k, v in inputs.items()}
        positions = {"position_ids": (inputs["attention_mask"].cumsum(1) - 1).clamp(min=0)}
    out = run(model, inputs, "p", **positions).hidden_states
    keep = inputs["attention_mask"][1].bool()
    alone = run(model, {k: v[1:, keep] for k, v in inputs.items()}, "p").hidden_states
    close(out[1, keep], alone[0])


def test_eager_attention_gives_the_same_outputs_as_sdpa():
    inputs = batch()
    outs = []
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = AdapterModel(AutoModel.from_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                              intermediate_size=37, vocab_size=99),
                                                   attn_implementation=implementation)).eval()
        outs.append(run(with_prefixes(model, "p"), inputs, "p").hidden_states)
    close(outs[0], outs[1])


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_decoder_prefix_of_adapterhub_gives_its_outputs_and_generates_the_same_with_and_without_a_kv_cache(family):
    """AdapterHub's decoder prefix files load (its names are ours). The reference is AdapterHub run
    with eager attention (make_prefix_eager.py): with sdpa, adapters 1.3 masks its own prefix out
    (it inverts a boolean mask), so its recorded ``pt.hidden`` equals ``base.hidden``."""
    root = LLAMA.parent / family
    ref = load_file(root / "reference_outputs.safetensors")
    eager = load_file(root / "pt_eager_reference.safetensors")
    model = AdapterModel.from_pretrained(root / "backbone").eval()
    model.load_adapter(root / "bin" / "pt", with_head=False)
    with torch.no_grad(), model.adapter_setup("pt", head="default"):
        out = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
    close(out.hidden_states, eager["hidden"])
    close(out.logits, eager["logits"])
    assert (out.hidden_states - ref["base.hidden"]).abs().max() > 0.1
    tokens = {}
    for cache in (True, False):
        with torch.no_grad(), model.adapter_setup("pt", head="default"):
            tokens[cache] = model.generate(ref["input_ids"], attention_mask=ref["attention_mask"], max_new_tokens=6,
                                           min_new_tokens=6, do_sample=False, num_beams=1, use_cache=cache,
                                           pad_token_id=0)
    assert torch.equal(tokens[False], tokens[True])
    assert not torch.equal(tokens[True], ref["generate.base.nocache"])  # the prefix acts in generation


def stepwise(model, ids, first: int = 5):
    """Logits of ``ids`` in one pass without a cache, and in ``first`` tokens then one token per
    pass with a KV cache (the active causal_lm head); and the cache."""
    lm = model._causal_lm(model.active_head)
    with torch.no_grad():
        full = lm(ids).logits
        out = lm(ids[:, :first], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for i in range(first, ids.shape[1]):
            out = lm(ids[:, i:i + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
    return full, torch.cat(steps, dim=1), cache


def test_a_cached_step_by_step_forward_equals_the_full_forward():
    model = with_prefixes(tiny_llama(causal_lm=True), "p")
    model.set_active_adapters("p")
    ids = batch(rows=2, length=9)["input_ids"]
    full, steps, cache = stepwise(model, ids)
    close(steps, full)
    assert cache.get_seq_length() == ids.shape[1]  # the cache holds the sequence only, never a prefix


def test_stack_puts_the_later_prefix_in_front():
    """Stack(a, b) attends to [b; a; sequence]: a flat prefix of b's then a's values gives the same."""
    model = with_prefixes(tiny_model(), "a", "b", config="prefix_tuning_flat[prefix_length=2]")
    model.add_adapter("ba", "prefix_tuning_flat[prefix_length=4]")
    pool = model.backbone.prefix_tuning.prefix_tunings
    with torch.no_grad():
        pool["ba"]["self_prefix"].control_trans.copy_(torch.cat([pool[n]["self_prefix"].control_trans for n in "ba"]))
    inputs = batch()
    close(run(model, inputs, Stack("a", "b")).hidden_states, run(model, inputs, "ba").hidden_states)


def test_batchsplit_and_parallel_run_each_prefix_on_its_rows():
    model = with_prefixes(tiny_model(), "a", "b")
    model.add_adapter("c", SMALL.replace("3", "5"))  # a longer prefix: the shorter slices are padded
    inputs = batch(rows=3)
    alone = {n: run(model, inputs, n).hidden_states for n in "abc"}
    split = run(model, inputs, BatchSplit("a", "c", batch_sizes=[1, 2])).hidden_states
    close(split[:1], alone["a"][:1])
    close(split[1:], alone["c"][1:])
    parallel = run(model, inputs, Parallel("a", "c")).hidden_states
    close(parallel[:3], alone["a"])
    close(parallel[3:], alone["c"])
    with pytest.raises(AdapterConfigError, match="prefix_tuning cannot run inside Average"):
        model.set_active_adapters(Average("a", "b"))


def test_a_gate_of_one_lets_the_whole_prefix_through():
    inputs = batch()
    model = with_prefixes(tiny_model(), "plain")
    expected = run(model, inputs, "plain").hidden_states
    for shared in (True, False):
        name = f"gated{shared}"
        model.add_adapter(name, SMALL.replace("]", f", use_gating=True, shared_gating={shared}]"))
        model.backbone.prefix_tuning.prefix_tunings[name].load_state_dict(
            model.backbone.prefix_tuning.prefix_tunings["plain"].state_dict())
        gates = [m for m in model.adapter_modules(name)[1:]]
        assert len(gates) == 2 and all(g.out_features == (1 if shared else 2) for g in gates)
        assert (run(model, inputs, name).hidden_states - expected).abs().max() > 1e-3  # gates start near 0.5
        with torch.no_grad():
            for gate in gates:
                gate.weight.zero_()
                gate.bias.fill_(40.0)
        close(run(model, inputs, name).hidden_states, expected)


def test_train_adapter_trains_only_the_prefix_and_its_head():
    model = with_prefixes(tiny_model(), "p", "other")
    model.add_head("p", "classification", num_labels=2)
    model.train_adapter("p")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".prefix_tunings.p." in n or n.startswith("heads.p.") for n in trainable)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    inputs = batch()
    loss = model(**inputs, labels=torch.tensor([0, 1, 0])).loss
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    rows = {r["name"]: r for r in model.adapter_summary(as_dict=True)}
    assert rows["p"]["method"] == "prefix_tuning" and rows["p"]["trainable"] and not rows["other"]["trainable"]


def test_parameter_counts_on_bert_base_as_adapterhub_counts_them():
    with torch.device("meta"):
        model = AdapterModel(AutoModel.from_config(BertConfig()))
    model.add_adapter("p", "prefix_tuning")
    model.add_adapter("f", "prefix_tuning_flat")
    model.add_adapter("l", "prefix_tuning", leave_out=list(range(6)))
    counts = {r["name"]: r["params"] for r in model.adapter_summary(as_dict=True)}
    assert counts["p"] == 9_872_384
    assert counts["f"] == 30 * 12 * 2 * 768
    assert counts["l"] == 30 * 768 + 768 * 512 + 512 + 512 * 6 * 2 * 768 + 6 * 2 * 768


def test_bad_prefix_configs_are_one_line_errors():
    model = tiny_model()
    with pytest.raises(AdapterConfigError, match="leaves no layer"):
        model.add_adapter("p", "prefix_tuning", leave_out=[0, 1])
    with pytest.raises(AdapterConfigError, match="prefix_length must be an integer >= 1"):
        model.add_adapter("p", "prefix_tuning", prefix_length=0)
    with pytest.raises(AdapterConfigError, match="unknown adapter config field"):
        model.add_adapter("p", "prefix_tuning", reduction_factor=2)
    model.add_adapter("l", "lora")
    with pytest.raises(AdapterConfigError, match="'l' is a lora adapter; eject_prefix_tuning needs"):
        model.eject_prefix_tuning("l")
    assert model.config._attn_implementation == "sdpa"  # the failed add left nothing behind


def test_gpt2_takes_prefixes_and_refts_with_a_kv_cache_and_encoder_decoders_refuse_prompts():
    from transformers import AutoModelForCausalLM, GPT2Config, T5Config

    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64))
    model = AdapterModel(gpt2.eval()).eval()
    ids = batch(rows=2, length=6)["input_ids"]
    for name, config in (("p", SMALL), ("r", "noreft[dropout=0.0]")):
        model.add_adapter(name, config, set_active=True)
        perturb(model, f".{name}.", std=0.5)
        with torch.no_grad():
            tokens = [model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=c, pad_token_id=1)
                      for c in (True, False)]
        assert torch.equal(tokens[0], tokens[1]), name
    with pytest.raises(AdapterConfigError, match="prompt tuning is not supported on gpt2 models"):
        model.add_adapter("q", "prompt_tuning")
    t5 = AdapterModel(AutoModel.from_config(T5Config(d_model=32, num_layers=1, num_heads=4, d_ff=37, d_kv=8,
                                                     vocab_size=99)))
    with pytest.raises(AdapterConfigError, match="not supported on .*t5"):  # nor in AdapterHub (support_prompt_tuning)
        t5.add_adapter("x", "prompt_tuning")


def seq2seq(family):
    """The family's AdapterHub backbone (its LM head is ``default``), the inputs and AdapterHub's outputs."""
    ref = load_file(SEQ2SEQ / family / "methods" / "reference_outputs.safetensors")
    base = load_file(SEQ2SEQ / family / "reference_outputs.safetensors")
    inputs = {k: base[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
    return AdapterModel.from_pretrained(SEQ2SEQ / family / "backbone").eval(), inputs, ref


def seq2seq_outputs(model, inputs, setup):
    """The encoder's and the decoder's last hidden states and the logits, from one pass."""
    encoded = []
    handle = model.backbone.get_encoder().register_forward_hook(lambda m, args, out: encoded.append(out[0]))
    try:
        with torch.no_grad(), model.adapter_setup(setup, head="default"):
            out = model(**inputs)
    finally:
        handle.remove()
    return {"enc_hidden": encoded[0], "hidden": out.hidden_states, "logits": out.logits}


def greedy(model, inputs, setup, family, use_cache=True):
    with torch.no_grad(), model.adapter_setup(setup, head="default"):
        return model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=6,
                              min_new_tokens=6, do_sample=False, use_cache=use_cache, pad_token_id=int(family != "t5"))


@pytest.mark.parametrize("family", ["t5", "bart", "mbart"])
def test_encoder_decoder_prefixes_and_unions_of_adapterhub_give_its_outputs_and_tokens(family):
    """AdapterHub's encoder_prefix / self_prefix / cross_prefix places and names: the default
    config, one without an encoder prefix and with leave_out and per-key/value gates (on T5 a
    left-out first decoder layer leaves the next without relative positions, as AdapterHub's T5
    does), a flat one without cross prefix, MAM and UniPELT, Stack and BatchSplit. References are AdapterHub run
    with eager attention (its sdpa path masks BART's decoder prefix wrongly; make_encdec_methods.py)."""
    model, inputs, ref = seq2seq(family)
    for name in ("pt", "ptsw", "flatpt", "mam", "unipelt"):
        model.load_adapter(SEQ2SEQ / family / "methods" / "bin" / name, with_head=False)
        for key, value in seq2seq_outputs(model, inputs, name).items():
            close(value, ref[f"{name}.{key}"])
    assert (ref["pt.enc_hidden"] - ref["base.enc_hidden"]).abs().max() > 1e-2  # each location changes something
    assert (ref["ptsw.enc_hidden"] - ref["base.enc_hidden"]).abs().max() == 0  # encoder_prefix=False
    assert list(model.backbone.prefix_tuning.prefix_tunings["pt"]) == ["encoder_prefix", "self_prefix", "cross_prefix"]
    assert list(model.backbone.prefix_tuning.prefix_tunings["ptsw"]) == ["self_prefix", "cross_prefix"]
    for name in ("pt", "ptsw"):
        assert torch.equal(greedy(model, inputs, name, family), ref[f"generate.{name}.cache"])
    for key, value in seq2seq_outputs(model, inputs, Stack("pt", "flatpt")).items():
        close(value, ref[f"stack.{key}"])
    # BatchSplit: the row with the longest prefixes is AdapterHub's; its shorter rows attend to their
    # padding (pad_and_concat pads keys with pad_token_id and the additive mask with +1), ours do not
    for key, value in seq2seq_outputs(model, inputs, BatchSplit("pt", "ptsw", batch_sizes=[1, 1])).items():
        close(value[:1], ref[f"bsplit.{key}"][:1])


def seq2seq_stepwise(model, inputs, first: int):
    """Decoder logits in one pass without a cache, and in ``first`` tokens then one token per pass
    with a KV cache (the active setup, head ``default``); and the cache."""
    lm, ids = model._causal_lm("default"), inputs["decoder_input_ids"]
    encoder = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with torch.no_grad():
        full = lm(**encoder, decoder_input_ids=ids).logits
        out = lm(**encoder, decoder_input_ids=ids[:, :first], use_cache=True)
        steps = [out.logits]
        for i in range(first, ids.shape[1]):
            out = lm(encoder_outputs=(out.encoder_last_hidden_state,), attention_mask=inputs["attention_mask"],
                     decoder_input_ids=ids[:, i:i + 1], cache=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    return full, torch.cat(steps, dim=1), out.past_key_values


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_prefix_decodes_the_same_step_by_step_with_a_kv_cache(family):
    model, inputs, ref = seq2seq(family)
    model.load_adapter(SEQ2SEQ / family / "methods" / "bin" / "pt", with_head=False)
    model.set_active_adapters("pt")
    full, steps, cache = seq2seq_stepwise(model, inputs, first=2)
    close(steps, full)
    close(full, ref["pt.logits"])
    assert cache.get_seq_length() == inputs["decoder_input_ids"].shape[1]  # the cache never holds a prefix
    assert torch.equal(greedy(model, inputs, "pt", family, use_cache=False), ref["generate.pt.cache"])


def test_encoder_decoder_prefix_ejects_saves_and_reloads_under_adapterhubs_names(tmp_path):
    model, inputs, ref = seq2seq("t5")
    model.load_adapter(SEQ2SEQ / "t5" / "methods" / "bin" / "pt", load_as="ej", with_head=False)
    model.eject_prefix_tuning("ej")
    close(seq2seq_outputs(model, inputs, "ej")["logits"], ref["ejectpt.logits"])
    model.save_adapter(tmp_path / "ej", "ej")
    assert set(load_file(tmp_path / "ej" / "adapter.safetensors")) == {
        f"transformer.prefix_tuning.prefix_tunings.ej.{where}_prefix.control_trans" for where in ("encoder", "self", "cross")}
    fresh, _, _ = seq2seq("t5")
    fresh.load_adapter(tmp_path / "ej")
    close(seq2seq_outputs(fresh, inputs, "ej")["logits"], ref["pt.logits"])


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_batchsplit_rows_equal_each_prefix_alone(family):
    """Each slice of rows runs its own prefixes, the shorter one padded and invisible; T5's relative
    positions (and AdapterHub's rule for reusing them across layers) are each row's own. AdapterHub's
    shorter rows differ: their padding is visible (see the test above)."""
    model, inputs, _ = seq2seq(family)
    for name in ("pt", "ptsw"):  # 4 positions everywhere / 3, not in the encoder nor the decoder's first layer
        model.load_adapter(SEQ2SEQ / family / "methods" / "bin" / name, with_head=False)
    split = seq2seq_outputs(model, inputs, BatchSplit("pt", "ptsw", batch_sizes=[1, 1]))
    for row, name in enumerate(("pt", "ptsw")):
        alone = seq2seq_outputs(model, inputs, name)
        for key in ("enc_hidden", "logits"):
            close(split[key][row], alone[key][row])


def test_prefix_dropout_draws_a_mask_per_row_as_adapterhub():
    model = with_prefixes(tiny_model(), "p", config="prefix_tuning[prefix_length=3, bottleneck_size=8, dropout=0.5]")
    model.backbone.prefix_tuning.train()  # the prefix's dropout only; the backbone stays in eval mode
    inputs = batch(rows=1)
    twice = {k: v.repeat(2, 1) for k, v in inputs.items()}
    hidden = run(model, twice, "p").hidden_states
    assert (hidden[0] - hidden[1]).abs().max() > 1e-3  # the same row twice, two masks
    model.backbone.prefix_tuning.eval()
    hidden = run(model, twice, "p").hidden_states
    close(hidden[0], hidden[1], tol=1e-6)
