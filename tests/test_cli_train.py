"""The real entry point on the real MiniLM: a few steps on a slice of rotten_tomatoes, then
evaluate and predict on the run."""

import json

import pytest
import yaml

from clitools import adapterctl, metrics

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    adapterctl("train", "task=rotten_tomatoes", "adapter=pfeiffer", "trainer.max_steps=4", "trainer.batch_size=16",
               "trainer.max_train_samples=64", "trainer.max_eval_samples=64", cwd=cwd, timeout=600)
    (folder,) = (cwd / "outputs" / "train").iterdir()
    return folder


def test_train_writes_the_run_folder(run):
    assert run.name.count("_") == 1 and len(run.name) == len("2026-01-01_12-00-00")
    for name in ("config.yaml", "overrides.yaml", "train.log", "run.json", "metrics.json", "metrics.csv"):
        assert (run / name).is_file(), name
    assert not (run / "checkpoints").exists()  # kept only while the run can be resumed
    assert "done: accuracy=" in (run / "train.log").read_text() and ", best at step 4 of 4 -> " in (
        run / "train.log").read_text()
    adapter = run / "adapters" / "rotten_tomatoes"
    assert {p.name for p in adapter.iterdir()} >= {"adapter_config.json", "adapter.safetensors", "head_config.json",
                                                   "model_head.safetensors"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["backbone"]["name"] == "minilm" and config["adapter"]["preset"] == "pfeiffer"
    assert "trainer.max_steps=4" in yaml.safe_load((run / "overrides.yaml").read_text())
    record = json.loads((run / "run.json").read_text())
    assert record["task"] == "rotten_tomatoes" and record["label_names"] == ["neg", "pos"]
    assert record["adapter"]["dir"] == "adapters/rotten_tomatoes" and record["head"]["type"] == "classification"
    assert record["backbone"]["hf_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    m = metrics(run)
    assert m["steps"] == 4 and m["best_step"] == 4 and m["validation_rows"] == 64
    assert 0.0 <= m["accuracy"] <= 1.0 and "f1" in m and m["train_loss"] > 0


def test_evaluate_reproduces_the_run_metric(run, tmp_path):
    out = adapterctl("evaluate", f"run={run}", cwd=tmp_path, timeout=300).stdout
    scores = json.loads(out.strip().splitlines()[-1])
    assert scores["accuracy"] == pytest.approx(metrics(run)["accuracy"], abs=1e-9)
    assert scores["f1"] == pytest.approx(metrics(run)["f1"], abs=1e-9)


def test_predict_prints_labels_and_scores(run, tmp_path):
    (tmp_path / "in.csv").write_text("text\na gripping funny film\ndull and far too long\n")
    adapterctl("predict", f"adapter={run}/adapters/rotten_tomatoes", "file=in.csv", "output=out.jsonl",
               cwd=tmp_path, timeout=300)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["text"] for line in lines] == ["a gripping funny film", "dull and far too long"]
    for line in lines:
        assert line["label"] in ("neg", "pos") and set(line["scores"]) == {"neg", "pos"}
        assert line["score"] == max(line["scores"].values()) and sum(line["scores"].values()) == pytest.approx(1)
