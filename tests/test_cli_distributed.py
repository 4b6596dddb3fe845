"""Two CPU processes (torchrun, gloo: accelerate's MULTI_CPU) train the same adapter as one.

``trainer.batch_size`` is the global batch, split across the processes, so both runs take
the same optimizer steps on the same rows; the tiny backbone has no dropout, so only the
order of floating-point sums differs.
"""

import sys
from pathlib import Path

import torch

from clitools import adapter_weights, adapterctl, make_tiny_bert, metrics, quick


def test_two_processes_match_one(tmp_path):
    tiny = make_tiny_bert(tmp_path / "tiny", dropout=0.0)
    args = ["train", *quick(tiny, steps=6), "logger.every=1"]
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m", "adapterctl"]
    log = adapterctl(*args, "output_dir=two", cwd=tmp_path, command=torchrun, timeout=300).stderr
    assert log.count("run folder: two (2 process(es)") == 1 and log.count("done: accuracy=") == 1  # main only
    adapterctl(*args, "output_dir=one", cwd=tmp_path, timeout=300)
    assert metrics(tmp_path / "two")["processes"] == 2 and metrics(tmp_path / "one")["processes"] == 1
    two, one = adapter_weights(tmp_path / "two"), adapter_weights(tmp_path / "one")
    assert two.keys() == one.keys()
    for key in one:
        assert torch.allclose(two[key], one[key], atol=1e-6, rtol=1e-5), key
    assert any(one[k].abs().max() > 1e-4 for k in one if "adapter_up" in k)  # the adapter did train
    csv_one, csv_two = ((tmp_path / r / "metrics.csv").read_text().splitlines() for r in ("one", "two"))
    losses = [[float(line.split(",")[2]) for line in lines if ",train/loss," in line] for lines in (csv_one, csv_two)]
    assert len(losses[0]) == 6 and torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), atol=1e-5)
