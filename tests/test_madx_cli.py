"""MAD-X through the CLI: ``train ... setup=[<language adapter>]`` trains a task adapter on a
frozen language adapter; ``evaluate run=... setup=[<another>]`` swaps the language."""

import json

import torch
from safetensors.torch import load_file

from adapterctl import AdapterModel
from clitools import adapterctl, make_tiny_bert, quick
from conftest import DATA, perturb


def test_train_on_a_language_adapter_then_swap_it_at_evaluation(tmp_path):
    backbone = make_tiny_bert(tmp_path / "tiny", dropout=0.0)
    model = AdapterModel.from_pretrained(backbone)
    for lang in ("en", "de"):
        model.add_adapter(lang, "pfeiffer+inv")
    perturb(model, "adapters.")
    for lang in ("en", "de"):
        model.save_adapter(tmp_path / lang, lang)

    adapterctl("train", *quick(backbone, steps=3), f"data_root={DATA}", "adapter=pfeiffer", f"setup=[{tmp_path / 'en'}]",
               "output_dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["setup"] == ["en"]
    trained = load_file(run / "adapters" / "en" / "adapter.safetensors")
    assert any(k.startswith("bert.invertible_adapters.en.") for k in trained)
    assert all(torch.equal(v, trained[k]) for k, v in load_file(tmp_path / "en" / "adapter.safetensors").items())
    accuracy = json.loads((run / "metrics.json").read_text())["accuracy"]

    def evaluate(*extra):
        out = adapterctl("evaluate", "run=run", f"data_root={DATA}", *extra, cwd=tmp_path)
        return json.loads(out.stdout.strip().splitlines()[-1])["accuracy"]

    assert evaluate("output_dir=ev") == accuracy  # the stack is restored from the run folder
    assert 0.0 <= evaluate(f"setup=[{tmp_path / 'de'}]", "output_dir=ev_de") <= 1.0  # zero-shot: another language
