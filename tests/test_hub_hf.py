"""The HF Hub backend, offline: a stand-in for ``huggingface_hub.HfApi`` keeps each "remote"
repo in a folder, so push (files and model card), pull (every file verified against the Hub's
hashes) and loading by ``hf:owner/repo`` run for real up to the network calls."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
import yaml
from conftest import tiny_model
from hub_support import files_in, logits, make_run
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling
from safetensors.torch import load_file

from adapterctl import AdapterModel, hub
from adapterctl.cli import main
from adapterctl.errors import CorruptFileError
from adapterctl.hub.backends import HfHubBackend
from adapterctl.hub.card import read_card
from adapterctl.hub.export import export_run

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHfApi:
    """The four HfApi calls the backend makes, over local folders (``remote/<owner>/<repo>``)."""

    def __init__(self, remote: Path, tamper: str | None = None):
        self.remote, self.tamper, self.calls = Path(remote), tamper, []

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private))
        (self.remote / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, self.remote / repo_id, dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}")

    def model_info(self, repo_id, revision=None, files_metadata=False):
        self.calls.append(("model_info", repo_id, revision))
        folder = self.remote / repo_id
        if not folder.is_dir():
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 {repo_id}")
        siblings = []
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            if path.suffix in (".safetensors", ".bin"):  # LFS files: sha256
                lfs = BlobLfsInfo(size=len(data), sha256=hashlib.sha256(data).hexdigest(), pointer_size=130)
                siblings.append(RepoSibling(path.name, len(data), "x" * 40, lfs))
            else:  # plain git blobs: their git sha1
                blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                siblings.append(RepoSibling(path.name, len(data), blob, None))
        return SimpleNamespace(sha=COMMIT, siblings=siblings)

    def hf_hub_download(self, repo_id, filename, revision=None, local_dir=None):
        self.calls.append(("download", filename, revision))
        target = Path(local_dir) / filename
        data = (self.remote / repo_id / filename).read_bytes()
        if filename == self.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        target.write_bytes(data)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)  # as huggingface_hub keeps its metadata
        return str(target)


@pytest.fixture
def exported(tmp_path):
    run, model = make_run(tmp_path / "run")
    return export_run(run, tmp_path / "export", org="ukp", license="apache-2.0", citation="@misc{rt}"), model


def test_push_uploads_the_adapter_and_a_model_card(exported, tmp_path):
    export, _ = exported
    api = FakeHfApi(tmp_path / "remote")
    url = HfHubBackend(api).push(export / "rt", read_card(export / "card.yaml"), "me/rt-adapter", private=True)
    assert url.endswith(COMMIT)
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"] and api.calls[0][2] is True
    assert "sentiment/rotten_tomatoes@ukp version 1" in api.calls[1][2]
    repo = tmp_path / "remote" / "me" / "rt-adapter"
    assert sorted(p.name for p in repo.iterdir()) == [
        "README.md", "adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"]
    readme = (repo / "README.md").read_text()
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["library_name"] == "adapterctl" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["rotten_tomatoes"] and {"adapterctl", "bert", "sentiment"} <= set(meta["tags"])
    assert 'model.load_adapter("hf:me/rt-adapter", set_active=True)' in readme
    assert "| accuracy | 0.8100 |" in readme and "@misc{rt}" in readme


def test_pull_verifies_every_file_and_loads(exported, tmp_path, monkeypatch):
    export, model = exported
    api = FakeHfApi(tmp_path / "remote")
    HfHubBackend(api).push(export / "rt", read_card(export / "card.yaml"), "me/rt-adapter")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)
    monkeypatch.setenv("ADAPTERCTL_CACHE", str(tmp_path / "cache"))
    loaded = tiny_model()
    assert loaded.load_adapter("hf:me/rt-adapter", set_active=True) == "rt"
    assert torch.equal(logits(loaded, "rt"), logits(model, "rt"))
    folder = tmp_path / "cache" / "hf" / "me" / "rt-adapter" / COMMIT
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"]
    api.calls.clear()  # a pinned commit already in the cache needs no Hub at all
    assert hub.resolve(f"hf:me/rt-adapter@{COMMIT}") == folder and api.calls == []


@pytest.mark.parametrize("tamper", ["adapter.safetensors", "adapter_config.json"])
def test_pull_refuses_a_file_that_does_not_match_the_hub_hash(exported, tmp_path, tamper):
    export, _ = exported
    api = FakeHfApi(tmp_path / "remote", tamper=tamper)
    HfHubBackend(api).push(export / "rt", read_card(export / "card.yaml"), "me/rt-adapter")
    with pytest.raises(CorruptFileError, match=f"hf:me/rt-adapter@{COMMIT}/{tamper}: .*nothing was kept"
                       if tamper.endswith("json") else f"{tamper}: sha256 .* does not match"):
        hub.resolve("hf:me/rt-adapter", cache=tmp_path / "cache", api=api)
    assert files_in(tmp_path / "cache") == []


def test_unreachable_repo_is_a_clear_error(tmp_path):
    with pytest.raises(hub.DownloadError, match="hf:me/missing: cannot read the repo from the HF Hub"):
        hub.resolve("hf:me/missing", cache=tmp_path / "cache", api=FakeHfApi(tmp_path / "remote"))


def test_cli_push_and_pull_hf(exported, tmp_path, monkeypatch, capsys):
    export, _ = exported
    api = FakeHfApi(tmp_path / "remote")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)
    assert main(["hub", "push", str(export), "--hf", "me/rt-adapter"]) == 0
    assert f"pushed to hf:me/rt-adapter: https://huggingface.co/me/rt-adapter/commit/{COMMIT}" in capsys.readouterr().out
    assert (tmp_path / "remote" / "me" / "rt-adapter" / "adapter.safetensors").is_file()
    assert main(["hub", "pull", "hf:me/rt-adapter", "--cache", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"cache/hf/me/rt-adapter/{COMMIT}")


def test_pull_takes_only_the_files_an_adapter_folder_holds(exported, tmp_path):
    """A repo may hold anything (code, a whole model); only the adapter's files are downloaded."""
    export, _ = exported
    api = FakeHfApi(tmp_path / "remote")
    HfHubBackend(api).push(export / "rt", read_card(export / "card.yaml"), "me/rt-adapter")
    (tmp_path / "remote" / "me" / "rt-adapter" / "modeling_rt.py").write_text("import os")
    (tmp_path / "remote" / "me" / "rt-adapter" / "model.safetensors").write_bytes(b"a whole model")
    folder = hub.resolve("hf:me/rt-adapter", cache=tmp_path / "cache", api=api)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"]
    assert not [c for c in api.calls if c[0] == "download" and c[1] in ("modeling_rt.py", "model.safetensors")]


def test_a_peft_repo_loads_by_hf_id_with_peft_outputs(tmp_path, monkeypatch):
    """Most adapters shared on the HF Hub are PEFT folders: one (written by PEFT 0.21, DoRA on
    BERT) pulled by ``hf:owner/repo`` gives PEFT's recorded outputs and takes the repo's name,
    not its cache folder's (a commit hash)."""
    from test_peft import BACKBONES, PEFT, max_diffs, outputs

    shutil.copytree(PEFT / "bert_lora_dora", tmp_path / "remote" / "me" / "bert-dora")
    api = FakeHfApi(tmp_path / "remote")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: api)
    monkeypatch.setenv("ADAPTERCTL_CACHE", str(tmp_path / "cache"))
    model = AdapterModel.from_pretrained(BACKBONES["bert"]).eval()
    assert model.load_adapter("hf:me/bert-dora", set_active=True) == "bert-dora"
    ref = load_file(PEFT / "reference_outputs.safetensors")
    assert all(d <= 1e-5 for d in max_diffs(outputs(model, ref, "bert"), ref, "bert_lora_dora").values())
    assert model.load_adapter(f"hf:me/bert-dora@{COMMIT}", load_as="pinned") == "pinned"
