"""AdapterDrop in training: the lowest n layers lose their adapters, n drawn per pass."""

import pytest
import torch
import yaml

from adapterctl import AdapterConfigError
from adapterctl.methods.adapterdrop import AdapterDrop
from clitools import adapterctl, make_tiny_bert, quick
from conftest import DATA, batch, perturb, tiny_model


def test_draws_cover_zero_to_max_layer_exclusive_and_p_gates_them():
    torch.manual_seed(0)
    draws = [AdapterDrop(3).sample() for _ in range(300)]
    assert set(draws) == {0, 1, 2}
    assert all(AdapterDrop(3, p=0.0).sample() == 0 for _ in range(50))
    torch.manual_seed(0)
    half = [AdapterDrop(2, p=0.5).sample() for _ in range(400)]
    assert 0.15 < sum(half) / len(half) < 0.35  # P(n = 1) = p / 2


def test_training_passes_skip_the_lowest_layers_and_inference_does_not():
    model = tiny_model()
    model.add_adapter("a", "pfeiffer")
    perturb(model, ".adapters.")
    model.train_adapter("a")
    model.set_adapter_drop(max_layer=2)
    ran = []
    for idx in (0, 1):
        module = model.backbone.encoder.layer[idx].output.adapters["a"].adapter_down  # runs on every path
        module.register_forward_hook(lambda m, i, o, idx=idx: ran.append(idx))
    torch.manual_seed(0)
    pattern = []
    for _ in range(20):
        ran.clear()
        loss = model(**batch()).hidden_states.sum()
        loss.backward()
        down = model.backbone.encoder.layer[0].output.adapters["a"].adapter_down[0].weight
        pattern.append(tuple(ran))
        assert (down.grad is None) == (0 not in ran)  # a dropped adapter gets no gradient
        model.zero_grad(set_to_none=True)
    assert set(pattern) == {(0, 1), (1,)}  # layer 0 sometimes dropped, layer 1 never
    model.eval()
    ran.clear()
    with torch.no_grad():
        model(**batch())
    assert ran == [0, 1]


def test_bad_adapter_drop_settings_are_refused():
    model = tiny_model()
    with pytest.raises(AdapterConfigError, match="model has 2 layers"):
        model.set_adapter_drop(max_layer=3)
    with pytest.raises(AdapterConfigError, match="probability"):
        model.set_adapter_drop(max_layer=1, p=1.5)
    with pytest.raises(AdapterConfigError, match="integer >= 1"):
        model.set_adapter_drop(max_layer=0)
    model.set_adapter_drop(1)
    model.set_adapter_drop(None)
    assert model.adapter_drop is None


def test_train_command_takes_adapter_drop_from_the_trainer_config(tmp_path):
    backbone = make_tiny_bert(tmp_path / "tiny")
    adapterctl("train", *quick(backbone, steps=3), f"data_root={DATA}", "adapter=pfeiffer", "output_dir=run",
               "trainer.adapter_drop.max_layer=2", "trainer.adapter_drop.p=0.5", cwd=tmp_path)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["trainer"]["adapter_drop"] == {"max_layer": 2, "p": 0.5}
    assert (tmp_path / "run" / "adapters" / "rotten_tomatoes" / "adapter.safetensors").is_file()
    bad = adapterctl("train", *quick(backbone), f"data_root={DATA}", "output_dir=run2",
                     "trainer.adapter_drop.max_layer=5", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "model has 2 layers" in bad.stderr
