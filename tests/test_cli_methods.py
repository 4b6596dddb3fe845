"""Methods beyond the bottleneck adapters learn through the real entry point on the real MiniLM:
``adapterctl train`` (in this process: no second interpreter to start) on a slice of
rotten_tomatoes ends clearly above chance, and the saved adapter is the method's.

A short run at a raised learning rate (the presets' rates are for 2 epochs): 40 steps, about 45
CPU-seconds per method. Chance is 0.5; 200 validation rows put 0.6 about 2.8 standard deviations
above it (measured: loreft 0.65, unipelt 0.705). Compacter and the other bottlenecks train through
the CLI in test_compacter.py / test_cli_train.py; each method's longer figures are
bench/methods_table.py's."""

import json

import pytest

from adapterctl.cli import main
from clitools import metrics

pytestmark = pytest.mark.real


# unipelt: prefix tuning, a bottleneck and LoRA behind gates, its parts typed under adapter.configs
@pytest.mark.parametrize("preset, architecture", [("loreft", "reft"), ("unipelt", "union")])
def test_the_method_learns_rotten_tomatoes_through_train(preset, architecture, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "task=rotten_tomatoes", f"adapter={preset}", "trainer.lr=5e-3", "trainer.warmup_ratio=0",
                 "trainer.max_steps=40", "trainer.batch_size=16", "trainer.max_length=32",
                 "trainer.max_train_samples=2000", "trainer.max_eval_samples=200", "trainer.eval_batch_size=100",
                 "output_dir=run"]) == 0
    m = metrics(tmp_path / "run")
    print(f"{preset}: accuracy {m['accuracy']:.3f} after {m['steps']} steps")
    assert m["steps"] == 40 and m["validation_rows"] == 200
    assert m["accuracy"] >= 0.6
    saved = json.loads((tmp_path / "run" / "adapters" / "rotten_tomatoes" / "adapter_config.json").read_text())
    assert (saved["config"].get("architecture") or "bottleneck") == architecture
