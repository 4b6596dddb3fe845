"""The cache holds only complete, verified adapters: interrupted or concurrent installs
leave either nothing or one whole folder."""

from __future__ import annotations

import pytest
from hub_support import files_in

from adapterctl.errors import CorruptFileError
from adapterctl.hub.cache import Cache


def _adapter(folder, text="{}"):
    (folder / "adapter_config.json").write_text(text)
    (folder / "adapter.safetensors").write_bytes(b"weights")


def test_interrupted_install_leaves_nothing(tmp_path):
    cache = Cache(tmp_path / "cache")

    def interrupted(out):
        (out / "adapter.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.install(tmp_path / "cache" / "adapters" / "x", interrupted)
    with pytest.raises(KeyboardInterrupt), cache.scratch() as tmp:
        (tmp / "adapter.zip").write_bytes(b"partial download")
        raise KeyboardInterrupt
    assert files_in(tmp_path / "cache") == []


def test_a_download_without_an_adapter_is_refused(tmp_path):
    cache = Cache(tmp_path / "cache")
    with pytest.raises(CorruptFileError, match="holds none of adapter_config.json, adapter_fusion_config.json, adapter_setup.json; it is not an adapter"):
        cache.install(tmp_path / "cache" / "x", lambda out: (out / "README.md").write_text("hi"))
    assert files_in(tmp_path / "cache") == []


def test_another_process_installing_the_same_adapter_meanwhile_is_fine(tmp_path):
    cache = Cache(tmp_path / "cache")
    target = tmp_path / "cache" / "adapters" / "x"

    def slow(out):  # while we download, another process finishes installing the same adapter
        _adapter(out, '{"mine": true}')
        target.mkdir(parents=True)
        _adapter(target, '{"theirs": true}')

    assert cache.install(target, slow) == target
    assert (target / "adapter_config.json").read_text() == '{"theirs": true}'
    assert files_in(tmp_path / "cache") == ["adapters/x/adapter.safetensors", "adapters/x/adapter_config.json"]


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERCTL_CACHE", str(tmp_path / "c"))
    assert Cache().root == tmp_path / "c"
    monkeypatch.delenv("ADAPTERCTL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Cache().root == tmp_path / ".cache" / "adapterctl"
