"""``kill -9`` anywhere in training, then ``resume=true``: the same run as an uninterrupted one.

Each interrupted run dies at an exact point (``clitools.killed_at``): mid-epoch between a
checkpoint and the next evaluation, during an evaluation, and between two micro-batches of
an accumulated step. The tiny backbone keeps its dropout (``trainer.backbone_dropout=all``),
so the RNG state must travel with the checkpoint and nothing else may draw from it; the
weights, metrics.json and metrics.csv must then equal the uninterrupted run's bit for bit.
"""

import json

import pytest
import torch

from adapterctl.cli import main
from clitools import adapter_weights, adapterctl, killed_at, make_tiny_bert, metrics, quick
from test_cli_checkpoint import RunsCode

STEPS = 24  # 64 rows in batches of 8: 8 steps per epoch, so 3 epochs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny"), dropout=0.1)


def settings(tiny, *extra):
    return ["train", *quick(tiny, steps=STEPS), "trainer.save_steps=3", "trainer.eval_steps=5", "logger.every=1",
            "trainer.backbone_dropout=all", *extra]


# The saved adapter holds the best evaluated weights, so an early best would hide a later
# divergence: metrics.csv logs every step's loss (and every evaluation), and the second test
# evaluates only at the end, so that its adapter holds the last step's weights.


def assert_same_run(straight, resumed):
    a, b = adapter_weights(straight), adapter_weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ma, mb = metrics(straight), metrics(resumed)
    assert {k: v for k, v in ma.items() if k != "wall_time_s"} == {k: v for k, v in mb.items() if k != "wall_time_s"}
    assert (straight / "metrics.csv").read_text() == (resumed / "metrics.csv").read_text()


def resumed_steps(run) -> list[int]:
    return [int(line.split("at step ")[1].split()[0]) for line in (run / "train.log").read_text().splitlines()
            if "resumed from" in line]


def test_killed_mid_epoch_in_evaluation_and_after_it_resumes_exactly(tmp_path, tiny):
    args = settings(tiny)
    adapterctl(*args, "output_dir=straight", cwd=tmp_path, timeout=300)
    # step 13 (mid-epoch 2; checkpoint at 12, next evaluation at 15)
    killed_at("train:14", *args, cwd=tmp_path)
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last").is_dir()
    # in the evaluation at step 15; resume=true alone picks the newest unfinished run
    killed_at("eval:1", "train", "resume=true", cwd=tmp_path)
    # step 16 (the checkpoint written after the evaluation at 15; the same command line again is accepted)
    killed_at("train:4", *args, f"output_dir={run}", "resume=true", cwd=tmp_path)
    adapterctl("train", f"output_dir={run}", "resume=true", cwd=tmp_path, timeout=300)
    assert resumed_steps(run) == [12, 12, 15]
    assert_same_run(tmp_path / "straight", run)
    assert not (run / "checkpoints").exists()  # a finished run keeps its adapter, not the checkpoints


def test_killed_between_accumulated_micro_batches_resumes_exactly(tmp_path, tiny):
    args = settings(tiny, "trainer.batch_size=4", "trainer.gradient_accumulation_steps=2", f"trainer.eval_steps={STEPS}")
    adapterctl(*args, "output_dir=straight", cwd=tmp_path, timeout=300)
    killed_at("train:12", *args, "output_dir=interrupted", cwd=tmp_path)  # between the two halves of step 6
    adapterctl("train", "output_dir=interrupted", "resume=true", cwd=tmp_path, timeout=300)
    assert resumed_steps(tmp_path / "interrupted") == [3]
    assert metrics(tmp_path / "straight")["best_step"] == STEPS  # the adapters compared are the last weights
    assert_same_run(tmp_path / "straight", tmp_path / "interrupted")


def test_resume_refuses_changed_settings_a_pickled_checkpoint_and_a_finished_run(tmp_path, monkeypatch, capsys, tiny):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    assert main(["train", "--cfg", "job", *settings(tiny)[1:]]) == 0
    (run / "config.yaml").write_text(capsys.readouterr().out)
    assert main(["train", "resume=true", "output_dir=run", "trainer.max_steps=50", "seed=7"]) == 1
    err = capsys.readouterr().err
    assert f"resume=true continues run with its own settings, and trainer.max_steps=50 (the run has {STEPS}); " \
           "seed=7 (the run has 42) would change them" in err
    marker = tmp_path / "executed"
    torch.save({"rng": RunsCode(marker)}, run / "checkpoints" / "last" / "state.pt")
    assert main(["train", "resume=true", "output_dir=run"]) == 1
    assert "state.pt is a pickled checkpoint (adapterctl 0.1), which could run code when read and is never loaded" \
        in capsys.readouterr().err
    assert not marker.exists()
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    assert main(["train", "resume=true", "output_dir=run"]) == 1
    assert "run is a finished run (it has metrics.json): nothing to resume" in capsys.readouterr().err
    assert main(["train", "resume=true"]) == 1  # the only run is finished
    assert "nothing to resume: no unfinished run under outputs/train" in capsys.readouterr().err
