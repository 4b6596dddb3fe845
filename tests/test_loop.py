"""``adapterctl.run.loop.train`` as a library function: a script hands it a model, rows and a
collator, and gets the best evaluated weights back (what bench/fusion_experiment.py needs)."""

import pytest
import torch

from adapterctl.errors import AdapterConfigError
from adapterctl.run.loop import TrainerSettings, train
from conftest import tiny_model


def rows(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(5, 99, (6,), generator=g).tolist(), "labels": i % 2} for i in range(n)]


def collate(batch):
    return {"input_ids": torch.tensor([r["input_ids"] for r in batch]),
            "attention_mask": torch.ones(len(batch), 6, dtype=torch.long),
            "labels": torch.tensor([r["labels"] for r in batch])}


def adapter_model():
    model = tiny_model("bert")
    model.add_adapter("a", "pfeiffer")
    model.add_head("a", "classification", id2label=["x", "y"])
    model.train_adapter("a")
    return model


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_loop_trains_evaluates_and_keeps_the_best_weights(tmp_path):
    model = adapter_model()
    before = trainable(model)
    scores, seen = iter([0.2, 0.9, 0.5]), {}

    def evaluate(m):
        assert not m.training  # evaluated in eval mode, training mode restored after
        step = len(seen) * 2 + 2
        seen[step] = trainable(m)
        return {"score": next(scores)}

    settings = TrainerSettings(max_steps=6, lr=1e-2, batch_size=4, eval_steps=2)
    logged = []
    state = train(model, rows(), collate=collate, settings=settings, evaluate=evaluate, main_metric="score",
                  log=lambda step, values: logged.append(step), log_every=3, progress=False)
    assert (state.step, state.best_step, state.best_metrics) == (6, 4, {"score": 0.9})
    assert sorted(seen) == [2, 4, 6] and logged.count(3) == 1 and logged.count(6) == 2  # loss at 3, 6; eval at 6
    after = trainable(model)
    assert all(torch.equal(after[n], seen[4][n]) for n in after)  # the best step's weights, not the last
    assert any(not torch.equal(after[n], before[n]) for n in after) and model.training
    assert not (tmp_path / "best").exists()  # without a checkpoints folder the best stays in memory


def test_the_loop_writes_checkpoints_when_given_a_folder(tmp_path):
    model = adapter_model()
    settings = TrainerSettings(max_steps=4, lr=1e-2, batch_size=4, save_steps=2)
    state = train(model, rows(), collate=collate, settings=settings, checkpoints=tmp_path, progress=False)
    assert state.step == 4 and state.best_step is None
    assert {p.name for p in (tmp_path / "last").iterdir()} == {"state.json", "state.safetensors", "weights.safetensors"}
    again = adapter_model()
    assert train(again, rows(), collate=collate, settings=settings, checkpoints=tmp_path, resume=True,
                 progress=False).step == 4  # resumed at the end: nothing left to do
    assert all(torch.equal(p, q) for p, q in zip(trainable(model).values(), trainable(again).values()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(settings=TrainerSettings(max_steps=2)), r"needs a learning rate: TrainerSettings\(lr=...\)"),
    (dict(settings=TrainerSettings(max_steps=2, lr=1e-3, batch_size=0)), r"batch_size=0 is not allowed"),
    (dict(settings=TrainerSettings(max_steps=2, lr=1e-3), evaluate=lambda m: {}), r"evaluate= needs main_metric="),
    (dict(settings=TrainerSettings(max_steps=2, lr=1e-3), resume=True), r"resume=True needs checkpoints="),
])
def test_the_loop_names_what_is_missing(kwargs, message):
    with pytest.raises(AdapterConfigError, match=message):
        train(adapter_model(), rows(), collate=collate, **kwargs)


def test_group_by_length_batches_similar_lengths_and_keeps_every_row_once():
    from adapterctl.run.loop import length_grouped

    rows = [{"input_ids": [0] * n} for n in torch.randint(1, 100, (1003,), generator=torch.Generator().manual_seed(0))]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1)).tolist()
    grouped = length_grouped(order, rows, 8, torch.Generator().manual_seed(2), megabatch=10)
    again = length_grouped(order, rows, 8, torch.Generator().manual_seed(2), megabatch=10)
    assert sorted(grouped) == list(range(1003)) and grouped == again and grouped != order
    batches = [grouped[i:i + 8] for i in range(0, len(grouped), 8)]
    assert len(batches[-1]) == 3 and set(batches[-1]) <= set(order[960:])  # the short batch (of the last run) stays last
    padded = sum(8 * max(len(rows[i]["input_ids"]) for i in b) for b in batches[:-1])
    random = sum(8 * max(len(rows[i]["input_ids"]) for i in order[j:j + 8]) for j in range(0, 1000, 8))
    assert padded < 0.75 * random  # far less padding than random batches
