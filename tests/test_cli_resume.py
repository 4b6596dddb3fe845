"""``kill -9`` during training, then ``resume=true``: the same adapter as an uninterrupted run.

The tiny backbone keeps its dropout on (trainer.backbone_dropout=all), so the test also checks
that the RNG state travels with the checkpoint; the kill lands mid-run, usually between two checkpoints."""

import signal
import time

import torch

from clitools import adapter_weights, adapterctl, make_tiny_bert, metrics, quick, spawn

STEPS = 80


def logged_steps(run) -> int:
    csv = run / "metrics.csv"
    return sum(",train/loss," in line for line in csv.read_text().splitlines()) if csv.exists() else 0


def test_resume_after_kill_gives_identical_weights(tmp_path):
    tiny = make_tiny_bert(tmp_path / "tiny", dropout=0.1)
    args = ["train", *quick(tiny, steps=STEPS), "trainer.save_steps=3", "trainer.eval_steps=20", "logger.every=1",
            "trainer.backbone_dropout=all"]
    adapterctl(*args, "output_dir=straight", cwd=tmp_path, timeout=300)

    run = tmp_path / "interrupted"
    proc = spawn(*args, f"output_dir={run}", cwd=tmp_path)
    deadline = time.time() + 240
    while logged_steps(run) < 25 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last").is_dir()

    adapterctl("train", f"output_dir={run}", "resume=true", cwd=tmp_path, timeout=300)  # the run's own config
    log = (run / "train.log").read_text()
    resumed_at = int(log.split("at step ")[1].split()[0])
    assert 0 < resumed_at < STEPS
    assert metrics(run)["steps"] == STEPS
    straight, resumed = adapter_weights(tmp_path / "straight"), adapter_weights(run)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert metrics(run)["accuracy"] == metrics(tmp_path / "straight")["accuracy"]
