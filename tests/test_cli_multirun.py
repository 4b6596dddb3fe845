"""``adapterctl train -m``: one run folder per combination, and a summary of their metrics."""

import csv
import json

from adapterctl.cli import main
from clitools import make_tiny_bert, quick


def test_multirun_gives_a_folder_per_combination_and_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = make_tiny_bert(tmp_path / "tiny")
    assert main(["train", "-m", *quick(tiny, steps=2), "adapter=houlsby,pfeiffer", "seed=1,2"]) == 0
    (sweep,) = (tmp_path / "outputs" / "train").iterdir()
    summary = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [job["overrides"][-2:] for job in summary] == [
        ["adapter=houlsby", "seed=1"], ["adapter=houlsby", "seed=2"],
        ["adapter=pfeiffer", "seed=1"], ["adapter=pfeiffer", "seed=2"],
    ]
    for n, job in enumerate(summary):
        run = sweep / str(n)
        assert tmp_path / job["folder"] == run and (run / "adapters" / "rotten_tomatoes" / "adapter.safetensors").is_file()
        record = json.loads((run / "run.json").read_text())
        assert record["adapter"]["preset"] == job["overrides"][-2].split("=")[1]
        assert record["seed"] == int(job["overrides"][-1].split("=")[1])
        assert job["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 4 and "accuracy" in rows[0]
    assert "adapter=pfeiffer seed=2" in capsys.readouterr().out


def test_a_job_that_fails_while_running_leaves_the_summary_of_the_others(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny = make_tiny_bert(tmp_path / "tiny")
    assert main(["train", "-m", *quick(tiny, steps=1), "task.label_column=label,stars"]) == 1
    assert "no column 'stars'" in capsys.readouterr().err
    (sweep,) = (tmp_path / "outputs" / "train").iterdir()
    done, failed = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert "accuracy" in done and "error" not in done
    assert failed["overrides"][-1] == "task.label_column=stars" and "no column 'stars'" in failed["error"]
