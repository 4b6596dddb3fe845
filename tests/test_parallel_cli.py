"""``evaluate`` and ``predict`` with a Parallel setup: each adapter's result as if alone."""

import json

import pytest

from adapterctl import AdapterModel
from clitools import adapterctl, make_tiny_bert
from conftest import DATA, perturb


@pytest.fixture
def two_adapters(tmp_path):
    backbone = make_tiny_bert(tmp_path / "tiny", dropout=0.0)
    model = AdapterModel.from_pretrained(backbone)
    for name in ("a", "b"):
        model.add_adapter(name, "houlsby")
        model.add_head(name, "classification", id2label=["neg", "pos"])
    perturb(model, ".adapters.")
    perturb(model, "heads.", std=1.0, seed=1)
    for name in ("a", "b"):
        model.save_adapter(tmp_path / name, name)
    return tmp_path, [f"backbone.path={backbone}", "trainer.max_eval_samples=24"]


def test_predict_reports_each_adapter_of_a_parallel_pass_as_if_alone(two_adapters):
    tmp, common = two_adapters
    texts = "text=[a gripping and funny film,dull]"
    lines = adapterctl("predict", "adapter=[a,b]", texts, *common, cwd=tmp).stdout.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["text"] for r in rows] == ["a gripping and funny film", "dull"]
    for name in ("a", "b"):
        alone = [json.loads(line) for line in adapterctl("predict", f"adapter={name}", texts, *common,
                                                          cwd=tmp).stdout.strip().splitlines()]
        for together, single in zip(rows, alone):
            assert together[name]["label"] == single["label"]
            assert together[name]["scores"] == pytest.approx(single["scores"], abs=1e-6)


def test_evaluate_scores_each_adapter_of_a_parallel_pass_on_its_task(two_adapters):
    tmp, common = two_adapters
    common += [f"data_root={DATA}"]
    out = adapterctl("evaluate", "adapter=[a,b]", "task=rotten_tomatoes", "output_dir=par", *common, cwd=tmp)
    together = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(together) == {"a", "b"}
    for name in ("a", "b"):
        alone = json.loads(adapterctl("evaluate", f"adapter={name}", "task=rotten_tomatoes", f"output_dir=ev_{name}",
                                      *common, cwd=tmp).stdout.strip().splitlines()[-1])
        assert together[name]["accuracy"] == alone["accuracy"]
        assert together[name]["task"] == "rotten_tomatoes" and together[name]["rows"] == 24
    record = json.loads((tmp / "par" / "metrics.json").read_text())
    assert record["split"] == "validation" and set(record["adapters"]) == {"a", "b"}
