"""MAD-X: invertible adapters at the embeddings, a task adapter on a frozen language adapter,
and swapping the language adapter at inference."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from adapterctl import AdapterConfigError, AdapterModel, Parallel, Stack
from adapterctl.methods.invertible import GLOWCoupling, NICECoupling
from conftest import batch, perturb, tiny_backbone, tiny_model

MADX = Path(__file__).parent / "fixtures" / "adapterhub_madx"


def madx_model(inv="nice"):
    model = tiny_model()
    for lang in ("en", "de"):
        model.add_adapter(lang, "pfeiffer+inv", inv_adapter=inv)
    model.add_adapter("task", "pfeiffer")
    model.add_classification_head("task", num_labels=2)
    perturb(model, "adapters.")
    perturb(model, "heads.", seed=1)
    return model.eval()


def test_invertible_block_sits_at_the_base_model_under_adapterhubs_names():
    model = tiny_model()
    model.add_adapter("en", "pfeiffer+inv")
    keys = [k for k in model.state_dict() if "invertible" in k]
    assert sorted(keys) == sorted(f"bert.invertible_adapters.en.{f}.{i}.{p}" for f in "FG" for i in (0, 2)
                                  for p in ("weight", "bias"))
    assert model.backbone.invertible_adapters["en"].F[0].weight.shape == (8, 16)  # hidden 32: halves, reduction 2
    assert model.adapter_summary(as_dict=True)[0]["method"] == "pfeiffer+inv"


@pytest.mark.parametrize("inv", ["nice", "glow"])
def test_fresh_invertible_adapter_is_an_identity_and_its_inverse_inverts(inv):
    model, inputs = tiny_model(), batch()
    model.add_adapter("en", "pfeiffer+inv", inv_adapter=inv, set_active=True)
    with torch.no_grad():
        assert (model(**inputs).hidden_states - tiny_backbone()(**inputs).last_hidden_state).abs().max() <= 1e-6
    perturb(model, "invertible_adapters.")
    block = model.backbone.invertible_adapters["en"]
    assert isinstance(block, {"nice": NICECoupling, "glow": GLOWCoupling}[inv])
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = block(x)
        assert (y - x).abs().max() > 1e-2
        assert torch.allclose(block(y, rev=True), x, atol=1e-5)


def test_only_the_first_adapter_of_the_setup_runs_its_block_on_the_embeddings():
    model, ids = madx_model(), batch()["input_ids"]
    embeddings = model.backbone.embeddings
    with torch.no_grad():
        model.set_active_adapters(None)
        bare = embeddings(input_ids=ids)
        model.set_active_adapters(Stack("en", "task"))
        assert torch.equal(embeddings(input_ids=ids), model.backbone.invertible_adapters["en"](bare))
        model.set_active_adapters(Stack("task", "en"))  # "task" first: it has no block
        assert torch.equal(embeddings(input_ids=ids), bare)


def test_parallel_branches_share_one_language_adapter_or_are_refused():
    model, inputs = madx_model(), batch()
    model.add_adapter("t2", "pfeiffer")
    model.add_classification_head("t2", num_labels=2)
    with torch.no_grad():
        model.set_active_adapters(Parallel(Stack("en", "task"), Stack("en", "t2")))
        together = model(**inputs).logits
        model.set_active_adapters(Stack("en", "task"))
        assert torch.equal(together[0], model(**inputs).logits)
        model.set_active_adapters(Parallel(Stack("en", "task"), Stack("de", "t2")))
        with pytest.raises(AdapterConfigError, match="start with different adapters \\(de, en\\)"):
            model(**inputs)


def test_task_adapter_trains_on_top_of_the_frozen_language_adapter():
    model, inputs = madx_model(), batch()
    model.train_adapter("task")
    model.set_active_adapters(Stack("en", "task"))  # AdapterHub's MAD-X recipe
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if ".task." in n}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**inputs, labels=torch.tensor([0, 1, 1])).loss.backward()
    assert model.backbone.invertible_adapters["en"].F[0].weight.grad is None
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (n not in trainable), n


def test_swapping_the_language_adapter_at_inference(tmp_path):
    model, inputs = madx_model(), batch()
    with torch.no_grad():
        model.set_active_adapters(Stack("de", "task"))
        expected_de = model(**inputs).logits
        model.set_active_adapters(Stack("en", "task"))
        assert not torch.allclose(model(**inputs).logits, expected_de)
    model.save_adapter(tmp_path / "de", "de")
    model.save_adapter(tmp_path / "task", "task")
    assert any(k.startswith("bert.invertible_adapters.de.") for k in load_file(tmp_path / "de" / "adapter.safetensors"))
    # zero-shot transfer: a fresh model with the task adapter and only the target language's adapter
    fresh = tiny_model()
    fresh.load_adapter(tmp_path / "task")
    fresh.load_adapter(tmp_path / "de", load_as="lang")
    fresh.set_active_adapters(Stack("lang", "task"))
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).logits, expected_de)
    fresh.delete_adapter("lang")
    assert "lang" not in fresh.backbone.invertible_adapters


def test_adapterhub_madx_adapters_give_its_outputs():
    ref = load_file(MADX / "reference_outputs.safetensors")
    model = AdapterModel(AutoModel.from_pretrained(MADX.parent / "adapterhub" / "bert" / "backbone")).eval()
    model.load_adapter(MADX / "en")
    model.load_adapter(MADX / "task")
    model.set_active_adapters(Stack("en", "task"))
    inputs = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    with torch.no_grad():
        out = model(**inputs)
        assert (model.backbone.embeddings(input_ids=ref["input_ids"]) - ref["embeddings"]).abs().max() <= 1e-5
    assert (out.hidden_states - ref["hidden"]).abs().max() <= 1e-5
    assert (out.logits - ref["logits"]).abs().max() <= 1e-5
