"""Mixed batches: ``model(**batch, adapter_names=[...])`` runs every row through its own adapter
and head, equal (<= 1e-5) to running the row alone, on a tiny BERT and a tiny Llama, with
padding, for 1, 2 and 16 distinct adapters; gathered where the method can, grouped otherwise."""

from __future__ import annotations

import pytest
import torch
from conftest import perturb, tiny_llama, tiny_model
from test_families import causal_lm
from transformers import AutoModel, GPT2Config, GPTNeoXConfig

from adapterctl import AdapterModel
from adapterctl.errors import AdapterConfigError, AdapterNotFoundError

TOL = 1e-5
# 16 adapters that all run in the gathered pass: bottlenecks of two sizes, LoRA of two ranks, IA3
GATHERED = {**{f"pf{i}": ("pfeiffer", {"reduction_factor": 16 if i % 2 else 8}) for i in range(8)},
            **{f"lo{i}": ("lora", {"r": 4 if i % 2 else 8, "alpha": 8}) for i in range(6)},
            "ia0": ("ia3", {}), "ia1": ("ia3", {})}
# adapters that need the grouped path somewhere: placements and steps that differ, gates, MAD-X,
# DoRA's and VeRA's updates, Compacter's PHM projections, AdapterPlus's channel scaling
GROUPED = {"ho": ("houlsby", {}), "pf": ("pfeiffer", {}), "par": ("parallel", {}), "inv": ("pfeiffer+inv", {}),
           "gated": ("lora", {"use_gating": True}), "lo": ("lora", {}), "dora": ("dora", {}), "vera": ("vera", {}),
           "cp": ("compacter", {"reduction_factor": 4}), "gbn": ("pfeiffer", {"use_gating": True}), "plus": ("adapterplus", {})}


def build(family: str, adapters: dict, heads: bool = True):
    model = tiny_llama() if family == "llama" else tiny_model(family)
    for i, (name, (config, overrides)) in enumerate(adapters.items()):
        model.add_adapter(name, config, **overrides)
        if heads:
            model.add_head(name, "classification", num_labels=2 + i % 3)
    for i, name in enumerate(adapters):
        perturb(model, f".{name}.", std=0.2, seed=i)
    return model.eval()


def padded(rows: int, length: int = 11, seed: int = 3):
    """Right-padded ids: row r keeps length - (r % 5) tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    for r in range(rows):
        mask[r, length - r % 5:] = 0
    return {"input_ids": ids * mask + (1 - mask), "attention_mask": mask}


def assert_rows_equal_alone(model, inputs, names, trim: bool = True):
    """Row i of the mixed batch against row i alone, without its padding (``trim``) or with it."""
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=names)
        for i, name in enumerate(names):
            n = int(inputs["attention_mask"][i].sum()) if trim else inputs["attention_mask"].shape[1]
            row = {k: v[i:i + 1, :n] for k, v in inputs.items()}
            with model.adapter_setup(name if name != "__base__" else None):
                alone = model(**row)
            torch.testing.assert_close(mixed.hidden_states[i, :n], alone.hidden_states[0], atol=TOL, rtol=0)
            assert mixed.head[i] == alone.head
            if alone.head is not None:
                torch.testing.assert_close(mixed.logits[i], alone.logits[0], atol=TOL, rtol=0)
    return mixed


@pytest.fixture
def no_grouping(monkeypatch):
    """Fails a test whose mixed batch falls back to running adapters one group at a time."""
    def grouped(*args):
        raise AssertionError("a gathered mixed batch ran adapters one group at a time")

    for module in ("adapterctl.methods.bottleneck.layer", "adapterctl.methods.lora.layer"):
        monkeypatch.setattr(f"{module}.rows_grouped", grouped)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("distinct", [1, 2, 16])
def test_each_row_equals_its_adapter_alone(family, distinct, no_grouping):
    model = build(family, GATHERED)
    names = list(GATHERED)[:: 16 // distinct][:distinct]
    rows = [names[i % distinct] for i in range(max(2 * distinct, 5))]
    mixed = assert_rows_equal_alone(model, padded(len(rows)), rows)
    assert isinstance(mixed.logits, list) == (distinct > 1)  # one head for all rows: one tensor


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_rows_without_an_adapter_equal_the_bare_model(family, no_grouping):
    model = build(family, GATHERED)
    rows = ["pf0", None, "lo1", "__base__", "ia0", None]
    mixed = assert_rows_equal_alone(model, padded(len(rows)), rows)
    assert mixed.head == ["pf0", "ia1", "lo1", "ia1", "ia0", "ia1"]  # no adapter: the active head (the last added)
    model.active_head = None
    mixed = assert_rows_equal_alone(model, padded(len(rows)), rows)
    assert mixed.head[:2] == ["pf0", None] and mixed.logits[1] is None


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_adapters_that_cannot_gather_run_in_groups(family):
    adapters = {k: v for k, v in GROUPED.items() if not (family == "llama" and k == "inv")}
    model = build(family, adapters)
    rows = [*adapters, None, *reversed(adapters)]
    assert_rows_equal_alone(model, padded(len(rows)), rows, trim=False)  # a gate averages over the padding too


@pytest.mark.parametrize("config", [
    lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=37, vocab_size=99, n_positions=64),
    lambda: GPTNeoXConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                          vocab_size=99, max_position_embeddings=64),
], ids=["gpt2", "gpt_neox"])
def test_adapters_on_slices_of_a_fused_projection_gather(config, no_grouping):
    """GPT-2's c_attn and GPT-NeoX's query_key_value hold q, k and v in one projection: LoRAs
    and IA3s on different slices of it gather in one pass, each row as alone."""
    torch.manual_seed(0)
    model = AdapterModel(AutoModel.from_config(config()))
    adapters = {"q": ("lora", {"attn_matrices": ["q"]}), "qv": ("lora", {"attn_matrices": ["q", "v"], "r": 4}),
                "kv": ("ia3", {"attn_matrices": ["k", "v"]}), "pf": ("pfeiffer", {})}
    for i, (name, (adapter, overrides)) in enumerate(adapters.items()):
        model.add_adapter(name, adapter, **overrides)
        perturb(model, f".{name}.", std=0.2, seed=i)
    assert_rows_equal_alone(model.eval(), padded(6), ["qv", "q", None, "kv", "pf", "qv"])


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_one_batch_mixes_tasks_each_row_with_its_own_head(family, no_grouping):
    """A sentence row, a tagging row and a question-answering row in one batch: each gets its
    own head's answer (a label per sentence, a label per token, a start and an end per token)."""
    model = tiny_llama() if family == "llama" else tiny_model(family)
    for i, (name, config, head, kw) in enumerate([("cls", "pfeiffer", "classification", {"num_labels": 3}),
                                                  ("tag", "lora", "tagging", {"num_labels": 5}),
                                                  ("qa", "pfeiffer", "question_answering", {})]):
        model.add_adapter(name, config)
        model.add_head(name, head, **kw)
        perturb(model, f".{name}.", std=0.2, seed=i)
    model.eval()
    inputs, rows = padded(5), ["tag", "cls", "qa", "tag", "cls"]
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=rows)
        assert mixed.head == rows
        for i, name in enumerate(rows):
            n = int(inputs["attention_mask"][i].sum())
            alone = model(**{k: v[i:i + 1, :n] for k, v in inputs.items()}, adapter_setup=name).logits
            if name == "cls":
                assert mixed.logits[i].shape == (3,)
                torch.testing.assert_close(mixed.logits[i], alone[0], atol=TOL, rtol=0)
            elif name == "tag":
                assert mixed.logits[i].shape == (11, 5)  # every position of the padded row
                torch.testing.assert_close(mixed.logits[i][:n], alone[0], atol=TOL, rtol=0)
            else:
                start, end = mixed.logits[i]
                torch.testing.assert_close(start[:n], alone[0][0], atol=TOL, rtol=0)
                torch.testing.assert_close(end[:n], alone[1][0], atol=TOL, rtol=0)


def test_the_call_head_serves_rows_whose_adapter_has_none():
    model = build("bert", {"a": ("pfeiffer", {}), "b": ("lora", {})}, heads=False)
    model.add_head("shared", "classification", num_labels=3)
    inputs = padded(4)
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=["a", "b", None, "a"], head="shared")
        assert mixed.head == ["shared"] * 4 and mixed.logits.shape == (4, 3)
        alone = model(**{k: v[1:2, :int(inputs["attention_mask"][1].sum())] for k, v in inputs.items()},
                      adapter_setup="b", head="shared")
    torch.testing.assert_close(mixed.logits[1], alone.logits[0], atol=TOL, rtol=0)


def test_changed_and_replaced_weights_are_used():
    """The stacked weights follow a weight changed in place and an adapter deleted and added again
    under its name (whose new module may take the old one's id)."""
    model = build("bert", {"a": ("pfeiffer", {}), "b": ("lora", {})})
    inputs, rows = padded(4), ["a", "b", "b", "a"]
    assert_rows_equal_alone(model, inputs, rows)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".a." in name or ".b." in name:
                p.add_(0.05)
    assert_rows_equal_alone(model, inputs, rows)
    for seed in range(3):
        model.delete_adapter("b")
        model.add_adapter("b", "lora")
        perturb(model, ".b.", std=0.2, seed=10 + seed)
        assert_rows_equal_alone(model, inputs, rows)


def test_gradients_reach_each_rows_adapter():
    model = build("bert", {"a": ("pfeiffer", {}), "b": ("lora", {"init_weights": "bert"})})
    inputs, rows = padded(4), ["a", "b", "b", "a"]
    params = [p for n, p in model.named_parameters() if (".a." in n or ".b." in n) and not n.startswith("heads.")]
    model(**inputs, adapter_names=rows).hidden_states.sum().backward()
    mixed = [p.grad.clone() for p in params]
    model.zero_grad()
    for i, name in enumerate(rows):
        model(**{k: v[i:i + 1] for k, v in inputs.items()}, adapter_setup=name).hidden_states.sum().backward()
    for got, p in zip(mixed, params):
        assert p.grad.abs().sum() > 0
        torch.testing.assert_close(got, p.grad, atol=1e-4, rtol=1e-4)


def test_generate_runs_each_prompt_with_its_adapter():
    model = tiny_llama(causal_lm=True)
    for i, (name, config) in enumerate([("pf", "pfeiffer"), ("lo", "lora"), ("ia", "ia3")]):
        model.add_adapter(name, config)
        perturb(model, f".{name}.", std=0.3, seed=i)
    prompts = torch.randint(5, 99, (4, 6), generator=torch.Generator().manual_seed(0))
    rows = ["pf", "lo", None, "ia"]
    with torch.no_grad():
        mixed = model.generate(prompts, adapter_names=rows, max_new_tokens=8, do_sample=False, use_cache=True)
        alone = []
        for i, name in enumerate(rows):
            with model.adapter_setup(name, head="default") if name else model.adapter_setup(None, head="default"):
                alone.append(model.generate(prompts[i:i + 1], max_new_tokens=8, do_sample=False, use_cache=True)[0])
    assert torch.equal(mixed, torch.stack(alone))
    assert len({tuple(t[6:].tolist()) for t in alone}) > 1  # the adapters answer differently


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoders_run_mixed_batches(family):
    """T5 and BART: the encoder's and decoder's sites (cross-attention's too) run each row's
    adapter, gathered (Pfeiffer, LoRA) or grouped (DoRA); forward with decoder inputs, and beam
    search (the decoder's rows are the encoder's, repeated per beam)."""
    model = causal_lm(family)
    for i, (name, config) in enumerate([("pf", "pfeiffer"), ("lo", "lora"), ("do", "dora")]):
        model.add_adapter(name, config)
        perturb(model, f".{name}.", std=0.3, seed=i)
    inputs = padded(4, length=7)
    inputs["decoder_input_ids"] = inputs["input_ids"][:, :4].flip(0)
    rows = ["pf", "lo", None, "do"]
    assert_rows_equal_alone(model, inputs, rows, trim=False)
    prompts = {k: v for k, v in inputs.items() if k != "decoder_input_ids"}
    kw = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, num_beams=2, pad_token_id=0)
    with torch.no_grad():
        mixed = model.generate(**prompts, adapter_names=rows, **kw)
        alone = []
        for i, name in enumerate(rows):
            with model.adapter_setup(name, head="default"):
                alone.append(model.generate(**{k: v[i:i + 1] for k, v in prompts.items()}, **kw)[0])
    assert torch.equal(mixed, torch.stack(alone))
    assert len({tuple(t.tolist()) for t in alone}) > 1  # the adapters answer differently


@pytest.mark.parametrize("call, error, says", [
    (lambda m, x: m(**x, adapter_names=["a"]), AdapterConfigError, "1 entries for a batch of 3 rows"),
    (lambda m, x: m(**x, adapter_names=["a", "nope", None]), AdapterNotFoundError, "no adapter named 'nope'"),
    (lambda m, x: m(**x, adapter_names=["a"] * 3, labels=torch.zeros(3, dtype=torch.long)), AdapterConfigError,
     "for inference"),
    (lambda m, x: m(**x, adapter_names=["a"] * 3, adapter_setup="a"), AdapterConfigError, "not both"),
])
def test_bad_mixed_batches_are_one_line_errors(call, error, says):
    model = build("bert", {"a": ("lora", {})})
    with pytest.raises(error, match=says):
        call(model, padded(3))


def test_a_merged_adapter_is_refused():
    model = build("bert", {"a": ("lora", {}), "b": ("lora", {})})
    model.merge_adapter("a")
    with pytest.raises(AdapterConfigError, match="'a' is merged into the weights .* reset_adapter"):
        model(**padded(2), adapter_names=["a", "b"])
    model.reset_adapter()
    assert_rows_equal_alone(model, padded(2), ["a", "b"])


@pytest.mark.parametrize("config", ["prefix_tuning", "seq_bn|lora"])
def test_methods_without_mixed_batches_are_refused(config):
    """Prefix tuning's work is not one site's, and a union's parts would each need the rows: both
    refused by name, with the methods that can."""
    model = build("bert", {"a": ("lora", {}), "p": (config, {})}, heads=False)
    with pytest.raises(AdapterConfigError, match=r"'p' is a \w+ adapter, which cannot run in a mixed batch; methods "
                                                 r"that can: .*lora.* Group its rows"):
        model(**padded(2), adapter_names=["a", "p"])
