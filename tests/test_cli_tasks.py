"""Each task shape through the CLI on the tiny backbone: tagging, sentence pairs with three
labels, extractive QA from a local folder, and full fine-tuning (adapter=none)."""

import json

import pytest

from adapterctl.cli import main
from clitools import make_tiny_bert, metrics, quick


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny"))


def train(tmp_path, monkeypatch, *overrides) -> dict:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *overrides, "output_dir=run"]) == 0
    return metrics(tmp_path / "run")


def test_tagging_reports_entity_scores(tmp_path, monkeypatch, tiny):
    m = train(tmp_path, monkeypatch, *quick(tiny, steps=2), "task=conll2003")
    assert {"f1", "precision", "recall", "accuracy"} <= set(m) and m["main_metric"] == "f1"
    head = json.loads((tmp_path / "run" / "adapters" / "conll2003" / "head_config.json").read_text())
    assert head["config"]["head_type"] == "tagging" and len(head["config"]["label2id"]) == 9


def test_pairs_with_three_labels(tmp_path, monkeypatch, tiny):
    m = train(tmp_path, monkeypatch, *quick(tiny, steps=2), "task=mnli", "adapter=parallel")
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["f1"] <= 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["adapter"]["preset"] == "parallel"


def test_question_answering_from_a_local_folder(tmp_path, monkeypatch, tiny):
    data = tmp_path / "data" / "squad"
    data.mkdir(parents=True)
    context = "The Eiffel tower was finished in 1889 and stands in Paris."
    rows = [{"id": str(i), "question": q, "context": context, "answers": {"text": [a], "answer_start": [context.index(a)]}}
            for i, (q, a) in enumerate([("When was it finished?", "1889"), ("Where is it?", "Paris")] * 4)]
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = train(tmp_path, monkeypatch, *quick(tiny, steps=2), "task=squad", f"data_root={tmp_path / 'data'}")
    assert 0 <= m["exact_match"] <= 100 and 0 <= m["f1"] <= 100 and m["train_rows"] == 8


def test_full_fine_tuning_saves_the_model_and_evaluates_the_same(tmp_path, monkeypatch, capsys, tiny):
    m = train(tmp_path, monkeypatch, *quick(tiny, steps=2), "adapter=none")
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "adapters").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # three copies of the model, needed only to resume
    capsys.readouterr()
    assert main(["evaluate", "run=run"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == m["accuracy"]


def test_tensorboard_logger_writes_events_beside_the_csv(tmp_path, monkeypatch, tiny):
    train(tmp_path, monkeypatch, *quick(tiny, steps=2), "logger=tensorboard", "logger.every=1")
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert "train/loss" in (tmp_path / "run" / "metrics.csv").read_text()
