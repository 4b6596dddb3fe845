"""Save, then load into a fresh backbone: exact logits; every way a file can be wrong is refused."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapterctl import AdapterConfigError, AdapterModel, CorruptFileError, IncompatibleAdapterError
from conftest import batch, perturb, tiny_backbone, tiny_model

HEADS = {
    "classification": dict(num_labels=3, id2label=["neg", "neu", "pos"]),
    "regression": {},
    "multilabel_classification": dict(num_labels=2),
    "tagging": dict(num_labels=4, id2label=["O", "B-PER", "I-PER", "B-LOC"]),
    "question_answering": {},
    "multiple_choice": dict(num_choices=3),
}


def trained(preset, head_type, family="bert"):
    model = tiny_model(family)
    model.add_adapter("a", preset, set_active=True)
    model.add_head("a", head_type, **HEADS[head_type])
    perturb(model, ".a.", seed=1)
    perturb(model, "heads.a.", seed=2)
    return model


def logits(model, **kw):
    inputs = batch()
    if model.heads[model.active_head].config["head_type"] == "multiple_choice":
        inputs = {k: v.view(1, 3, -1) for k, v in inputs.items()}  # one question, three choices
    with torch.no_grad():
        out = model(**inputs, **kw).logits
    return torch.cat([t.flatten() for t in out]) if isinstance(out, tuple) else out


@pytest.mark.parametrize("preset", ["pfeiffer", "houlsby", "parallel"])
@pytest.mark.parametrize("head_type", list(HEADS))
def test_round_trip_reproduces_logits_exactly(tmp_path, preset, head_type):
    model = trained(preset, head_type)
    model.save_adapter(tmp_path / "a", "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"]
    fresh = AdapterModel(tiny_backbone()).eval()
    name = fresh.load_adapter(tmp_path / "a", set_active=True)
    assert name == "a" and fresh.heads["a"].config == model.heads["a"].config
    assert torch.equal(logits(fresh), logits(model))


def test_distilbert_round_trip_and_load_as(tmp_path):
    model = trained("houlsby", "classification", "distilbert")
    model.save_adapter(tmp_path / "a", "a")
    fresh = AdapterModel(tiny_backbone("distilbert")).eval()
    fresh.load_adapter(tmp_path / "a", load_as="sentiment", set_active=True)
    assert fresh.active_head == "sentiment"
    assert torch.equal(logits(fresh), logits(model))


def test_file_format_is_adapterhubs(tmp_path):
    model = trained("pfeiffer", "classification")
    model.save_adapter(tmp_path / "a", "a")
    env = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert set(env) == {"config", "hidden_size", "model_class", "model_name", "model_type", "name", "version"}
    assert (env["model_class"], env["model_type"], env["name"], env["hidden_size"]) == ("BertAdapterModel", "bert", "a", 32)
    keys = set(load_file(tmp_path / "a" / "adapter.safetensors"))
    assert "bert.encoder.layer.1.output.adapters.a.adapter_down.0.weight" in keys
    assert "bert.encoder.layer.1.output.adapters.a.adapter_up.weight" in keys
    head_keys = set(load_file(tmp_path / "a" / "model_head.safetensors"))
    assert head_keys == {"heads.a.1.weight", "heads.a.1.bias", "heads.a.4.weight", "heads.a.4.bias"}
    head_env = json.loads((tmp_path / "a" / "head_config.json").read_text())
    assert head_env["config"]["label2id"] == {"neg": 0, "neu": 1, "pos": 2}


def test_saving_never_overwrites_silently(tmp_path):
    model = trained("pfeiffer", "classification")
    target = tmp_path / "a"
    model.save_adapter(target, "a")
    before = (target / "adapter.safetensors").read_bytes()
    perturb(model, ".a.", seed=7)
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        model.save_adapter(target, "a")
    assert (target / "adapter.safetensors").read_bytes() == before
    model.save_adapter(target, "a", overwrite=True)
    assert (target / "adapter.safetensors").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary folders left behind


def test_head_exists_only_with_head(tmp_path):
    model = trained("pfeiffer", "classification")
    model.save_adapter(tmp_path / "a", "a", with_head=False)
    assert not (tmp_path / "a" / "head_config.json").exists()


@pytest.fixture
def saved(tmp_path):
    model = trained("pfeiffer", "classification")
    model.save_adapter(tmp_path / "a", "a")
    return tmp_path / "a"


def test_truncated_weights_are_refused_and_nothing_is_half_loaded(saved):
    data = (saved / "adapter.safetensors").read_bytes()
    (saved / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    fresh = tiny_model()
    with pytest.raises(CorruptFileError, match="truncated or corrupt.*re-save or re-download"):
        fresh.load_adapter(saved)
    assert not fresh.has_adapter("a") and "a" not in fresh.heads


def test_missing_weights_file_is_refused(saved):
    (saved / "adapter.safetensors").unlink()
    with pytest.raises(CorruptFileError, match="has no weights file"):
        tiny_model().load_adapter(saved)


def test_weights_that_do_not_match_the_config_are_refused(saved):
    tensors = load_file(saved / "adapter.safetensors")
    tensors.pop(next(iter(tensors)))
    save_file(tensors, saved / "adapter.safetensors")
    fresh = tiny_model()
    with pytest.raises(CorruptFileError, match="missing"):
        fresh.load_adapter(saved)
    assert not fresh.has_adapter("a")


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool])
@pytest.mark.parametrize("where", ["adapter.safetensors", "model_head.safetensors"])
def test_weights_stored_as_complex_integer_or_bool_tensors_are_refused(saved, dtype, where):
    """Before: copied into the float parameters (a complex one losing its imaginary part)."""
    tensors = load_file(saved / where)
    key = next(iter(tensors))
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, saved / where)
    fresh = tiny_model()
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CorruptFileError, match=rf"/a: .* is stored as {name}; adapter weights are real floating"):
        fresh.load_adapter(saved)
    assert not fresh.has_adapter("a") and "a" not in fresh.heads


def test_a_failed_overwrite_keeps_the_adapter_and_head_it_would_replace(saved):
    model = trained("pfeiffer", "classification")
    model.add_fusion(["a"])
    before = logits(model)
    tensors = load_file(saved / "adapter.safetensors")
    key = next(k for k in tensors if k.endswith("adapter_up.weight"))
    tensors[key] = tensors[key][:, :-1].contiguous()  # a shape the config does not give
    save_file(tensors, saved / "adapter.safetensors")
    with pytest.raises(IncompatibleAdapterError, match=r"\.adapters\.a\.adapter_up\.weight has shape \(32, 1\)"):
        model.load_adapter(saved, overwrite_ok=True)
    assert torch.equal(logits(model), before)
    assert model.has_adapter("a") and "a" in model.heads and model.active_head == "a"
    assert list(model.adapters_config) == ["a"] and list(model.fusions_config) == ["a"]
    model.save_adapter(saved.parent / "good", "a")
    assert model.load_adapter(saved.parent / "good", overwrite_ok=True) == "a"  # a sound folder replaces it
    assert list(model.adapters_config) == ["a"] and list(model.heads) == ["a"]
    model.set_active_adapters("a")
    assert torch.equal(logits(model), before)


def test_another_family_or_hidden_size_is_refused(saved):
    with pytest.raises(IncompatibleAdapterError, match="trained for a bert model, but this model is roberta"):
        tiny_model("roberta").load_adapter(saved)
    env = json.loads((saved / "adapter_config.json").read_text())
    env["hidden_size"] = 768
    (saved / "adapter_config.json").write_text(json.dumps(env))
    with pytest.raises(IncompatibleAdapterError, match="hidden size 768, but this model has 32"):
        tiny_model().load_adapter(saved)


def test_head_labels_must_match_the_task(saved):
    with pytest.raises(IncompatibleAdapterError, match=r"predicts labels \['neg', 'neu', 'pos'\].*with_head=False"):
        tiny_model().load_adapter(saved, labels=["negative", "positive"])
    fresh = tiny_model()
    fresh.load_adapter(saved, labels=["neg", "neu", "pos"])
    assert fresh.heads["a"].id2label == {0: "neg", 1: "neu", 2: "pos"}


def test_duplicate_name_on_load_is_refused(saved):
    model = tiny_model()
    model.load_adapter(saved)
    with pytest.raises(AdapterConfigError, match="already exists"):
        model.load_adapter(saved)


def test_legacy_bin_is_read_as_tensors_only(saved, tmp_path):
    tensors = load_file(saved / "adapter.safetensors")
    (saved / "adapter.safetensors").unlink()
    torch.save(tensors, saved / "pytorch_adapter.bin")
    model = tiny_model()
    model.load_adapter(saved, with_head=False)
    assert model.has_adapter("a")

    class Boom:
        def __reduce__(self):
            return (print, ("EXECUTED",))

    (saved / "pytorch_adapter.bin").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(CorruptFileError, match="holds something other than tensors.*nothing in it was executed"):
        tiny_model().load_adapter(saved, with_head=False)


def test_malformed_config_file_is_refused(saved):
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        tiny_model().load_adapter(saved)
