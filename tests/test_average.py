"""average_adapter: each strategy against its formula on a tiny BERT, and against the averaged
adapters AdapterHub's ``adapters`` 1.3.0 made (tests/fixtures/adapterhub_methods: avglin,
avgnegb, avgsvd, avgbn)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterctl import AdapterError, AdapterModel
from conftest import batch, perturb, tiny_model

METHODS = Path(__file__).parent / "fixtures" / "adapterhub_methods"


def lora_pair(**config):
    model = tiny_model()
    for name in ("a", "b"):
        model.add_adapter(name, "lora", r=4, alpha=8, intermediate_lora=True, **config)
    perturb(model, ".loras.", std=0.2)
    return model


def tensors(model, name):
    return {k.replace(f".{name}.", ".*."): v for k, v in model.state_dict().items() if f".{name}." in k}


def test_linear_averages_every_tensor_with_normalized_weights():
    model = tiny_model()
    for name in ("a", "b"):
        model.add_adapter(name, "pfeiffer")
    perturb(model, ".adapters.")
    model.average_adapter("avg", ["a", "b"], weights=[1.0, 3.0])  # normalized: 0.25, 0.75
    a, b, avg = tensors(model, "a"), tensors(model, "b"), tensors(model, "avg")
    assert avg.keys() == a.keys() and avg
    for key in avg:
        torch.testing.assert_close(avg[key], 0.25 * a[key] + 0.75 * b[key])
    model.average_adapter("mean", {"a": 2.0, "b": 2.0}, set_active=True)  # a dict of weights
    assert model.active_setup.flatten() == ["mean"]
    torch.testing.assert_close(tensors(model, "mean")[next(iter(a))], (a[next(iter(a))] + b[next(iter(a))]) / 2)


def test_negate_b_takes_the_weight_on_b_and_its_magnitude_on_a():
    model = lora_pair()
    model.average_adapter("n", ["a", "b"], weights=[1.5, -0.5], normalize_weights=False,
                          combine_strategy="lora_linear_only_negate_b")
    a, b, n = tensors(model, "a"), tensors(model, "b"), tensors(model, "n")
    for key in n:
        wa, wb = (1.5, 0.5) if key.endswith("lora_A") else (1.5, -0.5)
        torch.testing.assert_close(n[key], wa * a[key] + wb * b[key])


@pytest.mark.parametrize("svd_rank", [8, 2])
def test_delta_w_svd_is_the_best_rank_k_update_of_the_weighted_sum(svd_rank):
    model = lora_pair()
    model.average_adapter("s", ["a", "b"], weights=[0.3, 0.7], combine_strategy="lora_delta_w_svd", svd_rank=svd_rank)
    assert model.adapters_config["s"].r == svd_rank and model.adapters_config["s"].alpha == 8
    for layer in model._method("lora").layers.values():
        la, lb, ls = (layer.loras[n] for n in ("a", "b", "s"))
        target = 0.3 * la.scaling * la.delta_w + 0.7 * lb.scaling * lb.delta_w
        u, s, vh = torch.linalg.svd(target)
        best = u[:, :svd_rank] @ torch.diag(s[:svd_rank]) @ vh[:svd_rank]
        # rank 8 holds both rank-4 updates exactly (AdapterHub's would be off by r / svd_rank = 1/2)
        torch.testing.assert_close(ls.scaling * ls.delta_w, target if svd_rank == 8 else best, atol=1e-5, rtol=1e-4)


def test_bad_averages_are_one_line_errors():
    model = lora_pair()
    model.add_adapter("other", "lora", r=2)
    model.add_adapter("i", "ia3")
    model.add_adapter("bn", "pfeiffer")
    cases = [
        (dict(adapter_list=["a", "other"]), "configs differ"),
        (dict(adapter_list=["a", "b"], combine_strategy="ties"), "unknown combine_strategy"),
        (dict(adapter_list=["a", "b"], combine_strategy="lora_delta_w_svd"), "svd_rank goes with"),
        (dict(adapter_list=["a", "b"], svd_rank=2), "svd_rank goes with"),
        (dict(adapter_list=["a", "b"], combine_strategy="lora_delta_w_svd", svd_rank=99), "exceeds the largest rank"),
        (dict(adapter_list=["i"], combine_strategy="lora_linear_only_negate_b"), "plain LoRA adapters"),
        (dict(adapter_list=["bn"], combine_strategy="lora_linear_only_negate_b"), "bottleneck adapters cannot be"),
        (dict(adapter_list=["a", "b"], weights=[1.0, -1.0]), "sum to 0"),
        (dict(adapter_list=["a", "b"], weights=[1.0]), "1 weights for 2 adapters"),
        (dict(adapter_list=[]), "at least one adapter"),
        (dict(adapter_list=["a", "nope"]), "no adapter named 'nope'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(AdapterError, match=message):
            model.average_adapter("avg", **kwargs)
        assert "avg" not in model.adapters_config and not any(".avg." in k for k in model.state_dict())


@pytest.mark.parametrize("name, inputs, kwargs", [
    ("avglin", ("la", "lb"), dict(weights=[0.3, 0.7])),
    ("avgnegb", ("la", "lb"), dict(weights=[0.6, -0.2], combine_strategy="lora_linear_only_negate_b")),
    ("avgsvd", ("la", "lb"), dict(weights=[0.3, 0.7], combine_strategy="lora_delta_w_svd", svd_rank=4)),
    ("avgbn", ("ba", "bb"), dict(weights=[0.3, 0.7])),
])
def test_averages_equal_adapterhubs(name, inputs, kwargs):
    ref = load_file(METHODS / "reference_outputs.safetensors")
    model = AdapterModel.from_pretrained(METHODS / "backbone").eval()
    for adapter in inputs:
        model.load_adapter(METHODS / "safetensors" / adapter, with_head=False)
    model.average_adapter(name, list(inputs), set_active=True, **kwargs)
    with torch.no_grad():
        hidden = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).hidden_states
    assert (hidden - ref[f"{name}.hidden"]).abs().max().item() <= 1e-5
    theirs = load_file(METHODS / "safetensors" / name / "adapter.safetensors")
    ours = {k: v for k, v in model.state_dict().items() if f".{name}." in k}
    assert ours.keys() == theirs.keys()
    if name != "avgsvd":  # an SVD's factors are unique only up to signs
        assert all((ours[k] - theirs[k]).abs().max().item() <= 1e-6 for k in ours)


def test_averaging_keeps_outputs_of_identical_adapters():
    model = lora_pair()
    inputs = batch()
    model.average_adapter("same", ["a", "a"], weights=[0.2, 0.8])
    with torch.no_grad():
        with model.adapter_setup("a"):
            a = model(**inputs).hidden_states
        with model.adapter_setup("same"):
            same = model(**inputs).hidden_states
    torch.testing.assert_close(a, same)
