"""Checkpoints are read without unpickling: JSON and safetensors only, and anything else in a
run folder (a pickled ``state.pt``, a tampered ``state.json``) is a one-line error."""

import datetime
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from adapterctl.errors import CorruptFileError
from adapterctl.run import checkpoint


class RunsCode:
    """Unpickling this creates a file: the proof that a loader executed code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def draws():
    """One draw from each random generator a run uses."""
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def trained(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=1, num_training_steps=10)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_a_checkpoint_restores_weights_optimizer_scheduler_and_randomness(tmp_path):
    model, optimizer, scheduler = trained()
    checkpoint.save(tmp_path / "last", model, optimizer, scheduler, {"step": 3, "best_metrics": {"f1": 0.5}},
                    [checkpoint.rng_state()])
    expected = draws()
    assert sorted(p.name for p in (tmp_path / "last").iterdir()) == ["state.json", "state.safetensors",
                                                                     "weights.safetensors"]
    again, opt2, sched2 = trained(seed=1)
    loop, processes = checkpoint.restore(tmp_path / "last", again, opt2, sched2)
    assert loop == {"step": 3, "best_metrics": {"f1": 0.5}} and processes == 1
    assert draws() == expected
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    assert sched2.state_dict() == scheduler.state_dict()
    state, state2 = optimizer.state_dict(), opt2.state_dict()
    assert state["param_groups"] == state2["param_groups"]
    for index, values in state["state"].items():
        for key, value in values.items():
            assert torch.equal(value, state2["state"][index][key])


def test_a_pickled_state_is_refused_and_never_unpickled(tmp_path):
    model, optimizer, scheduler = trained()
    folder = tmp_path / "last"
    folder.mkdir()
    marker = tmp_path / "executed"
    torch.save({"rng": RunsCode(marker)}, folder / "state.pt")
    torch.save({"0.weight": RunsCode(marker)}, folder / "weights.pt")
    with pytest.raises(CorruptFileError, match=r"state.pt is a pickled checkpoint .* never loaded; start the run again"):
        checkpoint.restore(folder, model, optimizer, scheduler)
    assert not marker.exists()


@pytest.mark.parametrize("tamper, message", [
    (lambda s: {**s, "state": {"$pickle": "gASV"}}, "holds an entry adapterctl does not write"),
    (lambda s: {**s, "format": 0}, "is not an adapterctl checkpoint"),
    (lambda s: {**s, "state": {"$dict": [[{"$ndarray": "optimizer.0", "dtype": "|O"}, 1]]}}, "does not write"),
    (lambda s: {**s, "loop": {"step": 3, "__class__": "os.system"}}, "loop counters adapterctl does not write"),
])
def test_a_tampered_state_is_refused(tmp_path, tamper, message):
    from adapterctl.run.loop import LoopState

    model, optimizer, scheduler = trained()
    folder = tmp_path / "last"
    checkpoint.save(folder, model, optimizer, scheduler, {"step": 3}, [checkpoint.rng_state()])
    (folder / "state.json").write_text(json.dumps(tamper(json.loads((folder / "state.json").read_text()))))
    with pytest.raises(CorruptFileError, match=message):
        loop, _ = checkpoint.restore(folder, model, optimizer, scheduler)
        LoopState.from_checkpoint(loop, folder)


def test_the_run_modules_never_unpickle():
    import inspect

    from adapterctl.run import build, checkpoint as ckpt, folders, loop, runner, settings

    for module in (build, ckpt, folders, loop, runner, settings):
        source = inspect.getsource(module)
        assert "import pickle" not in source and "torch.load(" not in source, module.__name__


def test_a_checkpoint_whose_overwrite_was_killed_is_put_back(tmp_path, monkeypatch):
    """Killed between atomic_dir's two renames, ``last`` is missing and ``.last.old-*`` holds it:
    the resume that follows finds the run and reads the checkpoint."""
    from adapterctl.run import folders

    model, optimizer, scheduler = trained()
    run = tmp_path / "outputs" / "train" / "2026-01-01_00-00-00"
    (run / "config.yaml").parent.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    checkpoint.save(run / "checkpoints" / "last", model, optimizer, scheduler, {"step": 3}, [checkpoint.rng_state()])
    (run / "checkpoints" / "last").rename(run / "checkpoints" / ".last.old-x1y2")
    monkeypatch.chdir(tmp_path)
    assert folders.latest_unfinished("train") == Path("outputs/train/2026-01-01_00-00-00")
    assert checkpoint.restore(run / "checkpoints" / "last", model, optimizer, scheduler)[0] == {"step": 3}
    assert not list((run / "checkpoints").glob(".last.old-*"))


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from adapterctl.run import folders

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 1, 0, 0, 0)

    monkeypatch.setattr(folders.datetime, "datetime", Frozen)
    made = [folders.new_folder("evaluate", None, base=tmp_path) for _ in range(3)]
    assert [p.name for p in made] == ["2026-01-01_00-00-00", "2026-01-01_00-00-00_1", "2026-01-01_00-00-00_2"]
    assert all(p.is_dir() for p in made)
