"""``evaluate`` on an exported adapter reproduces the run's metric; ``predict`` takes texts
on the command line."""

import json

from adapterctl.cli import main
from clitools import make_tiny_bert, metrics, quick


def test_exported_adapter_evaluates_to_the_run_metric(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = make_tiny_bert(tmp_path / "tiny")
    assert main(["train", *quick(tiny, steps=3), "adapter=pfeiffer", "output_dir=run"]) == 0
    assert main(["export", "run=run", "out=exported"]) == 0
    assert (tmp_path / "exported" / "rotten_tomatoes.zip").is_file()
    capsys.readouterr()
    same_data = [f"backbone.path={tiny}", "trainer.max_eval_samples=32", "trainer.max_length=32"]
    assert main(["evaluate", "adapter=exported/rotten_tomatoes", "task=rotten_tomatoes", *same_data]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["accuracy"] == metrics(tmp_path / "run")["accuracy"]
    assert scores["f1"] == metrics(tmp_path / "run")["f1"]

    assert main(["predict", "run=run", "text=[a gripping funny film,dull]"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["text"] for line in lines] == ["a gripping funny film", "dull"]
    assert all(line["label"] in ("neg", "pos") for line in lines)


def test_predict_text_is_free_text():
    from adapterctl.run import settings

    assert settings.load("predict", ["run=r", "text=a gripping, funny film"]).text == "a gripping, funny film"
    assert settings.load("predict", ["run=r", """text=it's "fine", ok"""]).text == """it's "fine", ok"""
    assert list(settings.load("predict", ["run=r", 'text=["a, b",c]']).text) == ["a, b", "c"]


def test_predict_and_evaluate_check_inputs_and_labels_against_each_adapters_task(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = make_tiny_bert(tmp_path / "tiny")
    assert main(["train", *quick(tiny, steps=1), "output_dir=rt"]) == 0
    assert main(["train", *quick(tiny, steps=1), "task=qnli", "output_dir=qnli"]) == 0
    capsys.readouterr()
    pair_and_single = "adapter=[rt/adapters/rotten_tomatoes,qnli/adapters/qnli]"
    assert main(["predict", f"backbone.path={tiny}", pair_and_single, "text=a fine film"]) == 1
    assert ("the adapters read different inputs (rotten_tomatoes reads text; qnli reads question, sentence)"
            in capsys.readouterr().err)
    assert main(["predict", "adapter=qnli/adapters/qnli", f"backbone.path={tiny}", "text=is it fine?"]) == 1
    assert ("text 0: one text, but adapter 'qnli' scores pairs (question, sentence): give text=[[question,sentence]]"
            in capsys.readouterr().err)
    assert main(["predict", "run=qnli", "text=[[is it fine?,it is fine.]]"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["question"] == "is it fine?" and line["label"] in ("entailment", "not_entailment")

    assert main(["evaluate", "adapter=rt/adapters/rotten_tomatoes", "task=rte", f"backbone.path={tiny}"]) == 1
    assert ("predicts neg, pos, but the task has entailment, not_entailment: give the task it was trained for "
            "(task=...), or task.label_names=[neg,pos] if only the names differ") in capsys.readouterr().err

    (tmp_path / "empty.csv").write_text("text\n")
    assert main(["predict", "run=rt", "file=empty.csv"]) == 1
    assert "empty.csv holds no rows to predict on" in capsys.readouterr().err
    (tmp_path / "out.jsonl").write_text("keep me\n")
    assert main(["predict", "run=rt", "text=fine", "output=out.jsonl"]) == 1
    assert "output file out.jsonl already exists; choose another output=... or add overwrite=true" in capsys.readouterr().err
    assert (tmp_path / "out.jsonl").read_text() == "keep me\n"
    assert main(["predict", "run=rt", "text=fine", "output=out.jsonl", "overwrite=true"]) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["text"] == "fine"
