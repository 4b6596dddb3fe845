"""Bad input: one line on stderr that names the fix, no traceback, a non-zero exit."""

import json
import re

import pytest

from adapterctl.cli import main
from clitools import adapterctl, make_tiny_bert, quick


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny"))


def error_line(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("adapterctl ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("override, expected", [
    ("task=rotten_tomatos", r"unknown task 'rotten_tomatos'; choose one of: cb, .*did you mean 'rotten_tomatoes'"),
    ("backbone=bert-large", r"unknown backbone 'bert-large'; choose one of: .*minilm"),
    ("adapter=pfeifer", r"unknown adapter 'pfeifer'.*did you mean 'pfeiffer'"),
    ("trainer.lrr=0.1", r"unknown key 'trainer.lrr'.*did you mean 'trainer.lr'"),
    ("adapter.reduction_factr=8", r"did you mean 'adapter.reduction_factor'"),
    ("trainer.max_steps=abc", r"trainer.max_steps='abc' is not a valid integer; give trainer.max_steps=<integer>"),
    ("trainer.gradient_checkpointing=maybe", r"trainer.gradient_checkpointing='maybe' is not a valid bool"),
    ("recipe=no_such_recipe", r"no recipe 'no_such_recipe'; choose one of .*rotten_tomatoes_houlsby"),
    ("adaptr=houlsby", r"unknown key 'adaptr'.*did you mean the group 'adapter' \(adapter=[^)]*\bhoulsby\|[^)]*\bpfeiffer\b"),
    ("trainer=fast", r"unknown trainer 'fast'; choose one of: default \("),  # not its schema
    ("seed=abc", r"seed='abc' is not a valid integer; give seed=<integer>"),
    ("trainer.scheduler=cosinus", r"trainer.scheduler=cosinus is not allowed: give one of linear, cosine, .*inverse_sqrt"),
    ("trainer.batch_size=0", r"trainer.batch_size=0 is not allowed: give a whole number >= 1"),
    ("trainer.lr=-0.001", r"trainer.lr=-0.001 is not allowed: give a positive number"),
    ("trainer.lr=nan", r"trainer.lr=nan is not allowed"),
    ("trainer.gradient_accumulation_steps=0", r"trainer.gradient_accumulation_steps=0 is not allowed"),
    ("trainer.max_steps=-5", r"trainer.max_steps=-5 is not allowed: give a whole number >= 1, or null"),
    ("trainer.epochs=-1", r"trainer.epochs=-1 is not allowed: give a whole number >= 1"),
    ("trainer.warmup_ratio=1.5", r"trainer.warmup_ratio=1.5 is not allowed: give a number from 0 to 1"),
    ("trainer.backbone_dropout=off", r"trainer.backbone_dropout=off is not allowed: give one of all, hidden, none"),
    ("head=regression", r"head=regression does not fit task rotten_tomatoes \(classification, labels neg, pos\); "
                        r"use head=auto \(classification\)"),
    ("output_dir=file.txt/run", r"output_dir=file.txt/run: file.txt is a file, not a folder"),
])
def test_bad_settings_are_one_line_before_any_folder(capsys, monkeypatch, tmp_path, override, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("not a folder")
    assert re.search(expected, error_line(capsys, ["train", override]))
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("argv, expected", [
    (["train", "--max_steps", "5"], r"key=value, not --flags: write trainer.max_steps=5 instead of --max_steps 5"),
    (["train", "--lr=3e-4"], r"write adapter.lr=3e-4 or trainer.lr=3e-4 instead of --lr=3e-4"),
    (["fuse", "task=rte"], r"fuse needs at least two adapters to fuse \(got none\): give adapters=\[a,b,...\]"),
    (["fuse", "adapters=[a]"], r"fuse needs at least two adapters"),
    (["train", "-m", "adapter=pfeiffer,housby"], r"multirun job 1 \(adapter=housby\): unknown adapter 'housby'.*"
                                                 r"did you mean 'houlsby'"),
    (["train", "resume=true"], r"nothing to resume: no unfinished run under outputs/train"),
    (["train", "resume=maybe"], r"resume='maybe' is not"),
])
def test_command_line_mistakes(capsys, monkeypatch, tmp_path, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert re.search(expected, error_line(capsys, argv))
    assert not (tmp_path / "outputs").exists()  # a multirun checks every job before the first


def test_missing_data_says_where_to_put_it(capsys, monkeypatch, tmp_path, tiny):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    line = error_line(capsys, ["train", "task=qqp", f"backbone.path={tiny}"])
    assert "no local data for task 'qqp'" in line and "ADAPTERCTL_DATA" in line
    assert not (tmp_path / "outputs").exists()  # a failed start leaves no run folder


def test_label_column_missing(capsys, monkeypatch, tmp_path, tiny):
    monkeypatch.chdir(tmp_path)
    line = error_line(capsys, ["train", *quick(tiny), "task.label_column=stars"])
    assert "no column 'stars'" in line and "task.label_column=" in line


def test_label_out_of_range(capsys, monkeypatch, tmp_path, tiny):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data" / "rotten_tomatoes"
    data.mkdir(parents=True)
    rows = [{"text": "good", "label": 1}, {"text": "awful", "label": 7}]
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = error_line(capsys, ["train", *quick(tiny), f"data_root={tmp_path / 'data'}"])
    assert "label 7, outside 0..1" in line and "task.label_names" in line


def test_existing_output_folder_is_not_overwritten(capsys, monkeypatch, tmp_path, tiny):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    line = error_line(capsys, ["train", *quick(tiny), "output_dir=taken"])
    assert "output folder taken already exists" in line and "resume=true" in line
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_console_script_prints_no_traceback(tmp_path):
    proc = adapterctl("train", "task=nope", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unknown task 'nope'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command, group", [("train", "adapter"), ("fuse", "fusion")])
def test_command_help_shows_its_config_and_the_trainer_keys(capsys, command, group):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: adapterctl {command}") and f"# adapterctl {command}:" in out
    assert re.search(rf"^  {group} +\S", out, re.M)
    assert re.search(r"^  trainer.batch_size +int +32 +global batch", out, re.M)
    assert re.search(r"^  trainer.max_steps +int or null +null ", out, re.M)


def test_hydra_habits_print_the_config_without_running(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--cfg", "job", "adapter=pfeiffer", "trainer.max_steps=5"]) == 0
    job = capsys.readouterr().out
    assert "preset: pfeiffer" in job and "max_steps: 5" in job and "name: ${task.name}" in job
    assert main(["train", "--cfg", "job", "--resolve"]) == 0
    assert "name: rotten_tomatoes" in capsys.readouterr().out
    assert main(["train", "--info", "task=rte"]) == 0
    assert "task=rte" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert re.fullmatch(r"adapterctl \d+\.\d+\.\d+\n", capsys.readouterr().out)
    assert not (tmp_path / "outputs").exists()

