"""``adapterctl fuse`` end to end on a tiny backbone and a slice of cb."""

import json

import torch
from safetensors.torch import load_file

from adapterctl import AdapterModel, Fuse
from adapterctl.run.build import adapter_source
from clitools import adapterctl, make_tiny_bert
from conftest import DATA, perturb


def test_fuse_trains_fusion_and_head_saves_the_setup_and_evaluate_reproduces_it(tmp_path):
    backbone = make_tiny_bert(tmp_path / "tiny")
    model = AdapterModel.from_pretrained(backbone)
    for name in ("mnli", "sst2"):
        model.add_adapter(name, "pfeiffer")
    perturb(model, ".adapters.")
    model.save_adapter(tmp_path / "exported_mnli", "mnli")
    model.save_adapter(tmp_path / "outputs" / "train" / "2026-01-01_00-00-00" / "adapters" / "sst2", "sst2")

    quick = [f"backbone.path={backbone}", f"data_root={DATA}", "trainer.max_steps=3", "trainer.batch_size=8",
             "trainer.max_train_samples=32", "trainer.max_eval_samples=16", "trainer.max_length=32"]
    adapterctl("fuse", f"adapters=[{tmp_path / 'exported_mnli'},sst2]", "task=cb", "output_dir=fz", *quick, cwd=tmp_path)
    run = tmp_path / "fz"
    setup = json.loads((run / "setup" / "adapter_setup.json").read_text())
    assert setup["adapter_setup"] == Fuse("mnli", "sst2").to_dict()
    assert sorted(p.name for p in (run / "setup" / "mnli,sst2").iterdir()) == [
        "adapter_fusion_config.json", "head_config.json", "model_adapter_fusion.safetensors", "model_head.safetensors",
    ]
    for name, source in (("mnli", tmp_path / "exported_mnli"), ("sst2", tmp_path / "outputs" / "train" /
                                                                 "2026-01-01_00-00-00" / "adapters" / "sst2")):
        saved = load_file(run / "setup" / name / "adapter.safetensors")
        assert all(torch.equal(v, saved[k]) for k, v in load_file(source / "adapter.safetensors").items())  # frozen
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["fusion"] == "mnli,sst2" and 0.0 <= metrics["accuracy"] <= 1.0

    out = adapterctl("evaluate", "run=fz", f"data_root={DATA}", "output_dir=ev", cwd=tmp_path)
    assert json.loads(out.stdout.strip().splitlines()[-1])["accuracy"] == metrics["accuracy"]


def test_fuse_refuses_a_single_adapter_in_one_line(tmp_path):
    proc = adapterctl("fuse", "adapters=[mnli]", "task=cb", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "adapterctl fuse: error: fuse needs at least two adapters to fuse (got ['mnli']): give adapters=[a,b,...] "
        "(train runs, exported or adapter folders, adapter names or Hub ids)"
    ]


def test_adapter_sources_resolve_runs_exports_folders_names_and_hub_ids(tmp_path):
    adapter = tmp_path / "run" / "adapters" / "rte"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"adapter": {"dir": "adapters/rte"}, "full_model_dir": None}))
    (tmp_path / "run" / "config.yaml").write_text("{}\n")
    export = tmp_path / "export"
    (export / "rte").mkdir(parents=True)
    (export / "rte" / "adapter_config.json").write_text("{}")
    (export / "card.yaml").write_text("{}\n")
    named = tmp_path / "outputs" / "train" / "2026-01-02_00-00-00" / "adapters" / "sst2"
    named.mkdir(parents=True)
    (named / "adapter_config.json").write_text("{}")

    assert adapter_source(str(tmp_path / "run")) == adapter
    assert adapter_source(str(export)) == export / "rte"
    assert adapter_source(str(adapter)) == adapter
    assert adapter_source("sst2", base=tmp_path / "outputs") == named
    assert adapter_source("nli/multinli@ukp", base=tmp_path / "outputs") == "nli/multinli@ukp"
