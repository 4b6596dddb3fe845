"""Setups chosen per call: a ``with`` block or a forward argument runs other adapters (and
heads) than the default without touching it, per thread."""

import threading

import pytest
import torch

from adapterctl import AdapterNotFoundError, Stack
from adapterctl.run.build import checkpoint_activations
from conftest import batch, perturb, tiny_model


def two_adapter_model():
    model = tiny_model()
    for name, seed in (("a", 1), ("b", 2)):
        model.add_adapter(name, "pfeiffer" if name == "a" else "lora")
        model.add_head(name, num_labels=2 + seed)
        perturb(model, f".{name}.", std=0.2, seed=seed)
    model.set_active_adapters("a")
    return model


def test_a_with_block_and_a_forward_argument_choose_adapters_and_head_for_those_calls_only():
    model, inputs = two_adapter_model(), batch()
    with torch.no_grad():
        default = model(**inputs)
        model.set_active_adapters("b")
        b_alone = model(**inputs)
        model.set_active_adapters(Stack("a", "b"))
        stacked = model(**inputs)
        model.set_active_adapters("a")
        with model.adapter_setup("b"):
            assert torch.equal(model(**inputs).logits, b_alone.logits)  # b's adapter and b's head
        with model.adapter_setup(Stack("a", "b"), head="b"):
            out = model(**inputs)
            assert torch.equal(out.hidden_states, stacked.hidden_states) and out.head == "b"
        assert torch.equal(model(**inputs, adapter_setup="b").logits, b_alone.logits)
        assert torch.equal(model(**inputs).logits, default.logits)  # the default is untouched
    assert model.active_setup == Stack("a") and model.active_head == "a"
    with pytest.raises(AdapterNotFoundError, match="no adapter named .zz."), model.adapter_setup("zz"):
        pass


def test_two_threads_run_two_setups_through_one_model_at_once():
    model, inputs = two_adapter_model(), batch(rows=4, length=24)
    with torch.no_grad():
        expected = {name: model(**inputs, adapter_setup=name).logits for name in ("a", "b")}
    start, errors = threading.Barrier(2), []

    def worker(name):
        try:
            start.wait()
            with torch.no_grad(), model.adapter_setup(name):
                for _ in range(25):
                    assert torch.equal(model(**inputs).logits, expected[name])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_layers_recomputed_in_backward_run_the_setup_of_their_pass():
    """Activation checkpointing re-runs layers during backward, after the call returned."""

    def grads(checkpointing):
        model = two_adapter_model()
        model.train_adapter("b")
        model.set_active_adapters("a")  # the default differs from the call's setup
        if checkpointing:
            checkpoint_activations(model)
        model(**batch(), labels=torch.tensor([0, 1, 1]), adapter_setup="b").loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and plain
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)
