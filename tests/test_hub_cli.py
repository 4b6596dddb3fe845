"""``adapterctl export`` and ``adapterctl hub index|search|push|pull`` through the real entry point."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml
from conftest import tiny_model
from hub_support import logits, make_run

from adapterctl.cli import main


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "outputs" / "train" / "2026-01-01_00-00-00")


def test_export_writes_folder_zip_and_card(run, tmp_path, capsys):
    folder, _ = run
    out = tmp_path / "export"
    assert main(["export", f"run={folder}", f"out={out}", "org=ukp", "author=Jane Doe", "license=apache-2.0",
                 "citation=@misc{x}"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["card.yaml", "rt", "rt.zip"]
    card = yaml.safe_load((out / "card.yaml").read_text())
    assert card["files"] == [{"version": "1", "url": "rt.zip", "size": (out / "rt.zip").stat().st_size,
                              "sha256": hashlib.sha256((out / "rt.zip").read_bytes()).hexdigest()}]
    assert (card["author"], card["license"], card["citation"], card["org"]) == ("Jane Doe", "apache-2.0", "@misc{x}", "ukp")
    assert sorted(p.name for p in (out / "rt").iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"]
    assert "publish it: adapterctl hub push" in capsys.readouterr().out


def test_export_refuses_bad_input_without_touching_anything(run, tmp_path, capsys):
    folder, _ = run
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", f"run={folder}", f"out={out}"]) == 1
    assert "already exists" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", f"run={folder}", "colour=red"]) == 1
    assert "unexpected 'colour=red'; the options are:\n  run=..." in capsys.readouterr().err
    record = json.loads((folder / "run.json").read_text())
    record.update(adapter={"name": "none", "preset": "none", "config": None, "dir": None}, full_model_dir="model")
    (folder / "run.json").write_text(json.dumps(record))
    assert main(["export", f"run={folder}"]) == 1
    assert "fine-tuned the whole model (adapter=none): there is no adapter to export" in capsys.readouterr().err


def test_push_index_search_pull(tmp_path, capsys, monkeypatch):
    """Push two trainings of one adapter (versions 1 and 2), search, and pull either version."""
    hub = tmp_path / "hub"
    run1, model1 = make_run(tmp_path / "run1", seed=1)
    run2, model2 = make_run(tmp_path / "run2", seed=2, accuracy=0.85)
    assert main(["hub", "push", str(run1), "--hub", str(hub), "org=ukp", "license=mit"]) == 0
    assert "sentiment/rotten_tomatoes@ukp:1 published" in capsys.readouterr().out
    assert main(["hub", "push", str(run1), "--hub", str(hub), "org=ukp", "license=mit"]) == 0
    assert "sentiment/rotten_tomatoes@ukp:1 already published, unchanged" in capsys.readouterr().out
    assert main(["hub", "push", str(run2), "--hub", str(hub), "org=ukp", "license=mit", "version=1"]) == 1
    assert "already has a version 1 with other contents; choose another version=" in capsys.readouterr().err
    assert main(["hub", "push", str(run2), "--hub", str(hub), "org=ukp", "license=mit"]) == 0
    assert "sentiment/rotten_tomatoes@ukp:2 published" in capsys.readouterr().out
    [card] = (hub / "adapters" / "ukp").glob("*.yaml")
    card = yaml.safe_load(card.read_text())
    assert [f["version"] for f in card["files"]] == ["1", "2"] and card["default_version"] == "2"
    assert card["metrics"]["accuracy"] == 0.85

    before = (hub / "index.json").read_text()
    (hub / "index.json").unlink()
    assert main(["hub", "index", "--hub", str(hub)]) == 0
    assert (hub / "index.json").read_text() == before and (hub / "explore.html").is_file()
    assert "indexed 1 adapter(s)" in capsys.readouterr().out

    monkeypatch.setenv("ADAPTERCTL_HUB", str(hub))
    assert main(["hub", "search", "task=sentiment", "backbone=bert"]) == 0
    out = capsys.readouterr().out
    assert "sentiment/rotten_tomatoes@ukp  backbone=tiny-bert (bert, hidden 32)  arch=pfeiffer" in out
    assert "versions=1,2" in out and "accuracy=0.85" in out
    assert main(["hub", "search", "task=ner"]) == 0
    assert "no adapter matches task=ner" in capsys.readouterr().out
    assert main(["hub", "search", "colour=red"]) == 1

    cache = tmp_path / "cache"
    for ident, model in (("sentiment/rotten_tomatoes@ukp", model2), ("rotten_tomatoes@ukp:1", model1)):
        assert main(["hub", "pull", ident, "--cache", str(cache), "backbone=bert", "arch=pfeiffer"]) == 0
        captured = capsys.readouterr()
        assert "100%" in captured.err  # the progress bar
        folder = captured.out.strip().rsplit(" -> ", 1)[1]
        loaded = tiny_model()
        loaded.load_adapter(folder, set_active=True)
        assert torch.equal(logits(loaded, "rt"), logits(model, "rt"))
    assert main(["hub", "pull", "sentiment/rotten_tomatoes@ukp:3", "--cache", str(cache)]) == 1
    assert "not for version=3" in capsys.readouterr().err


def test_push_needs_a_hub_folder(run, tmp_path, capsys):
    folder, _ = run
    assert main(["hub", "push", str(folder), "--hub", "http://example.org/hub"]) == 1
    assert "is a URL; push into the hub's folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["hub", "push", str(folder)])  # argparse: one of --hub / --hf is required
