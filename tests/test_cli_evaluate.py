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

    assert settings.load("predict", ["text=a gripping, funny film"]).text == "a gripping, funny film"
    assert settings.load("predict", ["""text=it's "fine", ok"""]).text == """it's "fine", ok"""
    assert list(settings.load("predict", ['text=["a, b",c]']).text) == ["a, b", "c"]
