"""Packing is deterministic; unpacking refuses entries that escape, links, and non-zips,
before writing anything, also when a hub serves such an archive with a matching sha256."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import zipfile

import pytest
import yaml
from conftest import REPO
from hub_support import files_in, make_run

from adapterctl import hub
from adapterctl.hub import index
from adapterctl.hub.errors import UnsafeArchiveError
from adapterctl.formats import adapterhub
from adapterctl.hub.pack import ADAPTER_FILES, CONFIG_FILES, Limits, layout_problem, pack, unpack
from adapterctl.hub.publish import publish
from adapterctl.hub.export import export_run


def _zip(path, entries):
    """A zip with ``entries``: name -> bytes, or name -> ("link", target)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            if isinstance(data, tuple):
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, data[1])
            else:
                zf.writestr(name, data)
    return path


def test_pack_is_deterministic_and_round_trips(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter.safetensors").write_bytes(os.urandom(5000))
    first = pack(folder, tmp_path / "a.zip")
    time.sleep(1.1)
    os.utime(folder / "adapter_config.json")
    second = pack(folder, tmp_path / "b.zip")
    assert first.read_bytes() == second.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    unpack(first, out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert (out / "adapter.safetensors").read_bytes() == (folder / "adapter.safetensors").read_bytes()
    with pytest.raises(FileExistsError):
        pack(folder, first)


def test_pack_refuses_links(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        pack(folder, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()


@pytest.mark.parametrize("entries, reason", [
    ({"adapter_config.json": b"{}", "../evil.txt": b"x"}, "climbs out of the folder with '..'"),
    ({"sub/../../evil.txt": b"x"}, "climbs out"),
    ({"/tmp/evil.txt": b"x"}, "is an absolute path"),
    ({"adapter_config.json": b"{}", "link": ("link", "/etc/passwd")}, "is a symbolic link"),
    ({"adapter_config.json": b"1", "adapter_config.json/": b""}, "names an entry twice"),
])
def test_unpack_refuses_unsafe_entries_before_writing_anything(tmp_path, entries, reason):
    out = tmp_path / "out"
    out.mkdir()
    archive = _zip(tmp_path / "bad.zip", entries)
    with pytest.raises(UnsafeArchiveError, match=reason):
        unpack(archive, out)
    assert files_in(out) == [] and not (tmp_path / "evil.txt").exists()


def test_unpack_refuses_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip at all")
    with pytest.raises(UnsafeArchiveError, match="is not a zip archive"):
        unpack(tmp_path / "x.zip", tmp_path)


def _hub_serving(tmp_path, make_archive):
    """A hub whose publisher is the attacker: its one zip is replaced by ``make_archive(path)``
    and the card's sha256 and size match it. Returns the hub folder."""
    run, _ = make_run(tmp_path / "run")
    root = tmp_path / "hub"
    publish(export_run(run, tmp_path / "export", org="ukp"), root)
    [card_path] = (root / "adapters").rglob("*.yaml")
    [archive] = (root / "adapters").rglob("*.zip")
    archive.unlink()
    make_archive(archive)
    card = yaml.safe_load(card_path.read_text())
    card["files"][0].update(sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), size=archive.stat().st_size)
    card_path.write_text(yaml.safe_dump(card))
    index.build(root)
    return root


@pytest.mark.parametrize("evil", ["../../escaped.txt", "/tmp/adapterctl-escaped.txt"])
def test_a_hub_serving_an_escaping_archive_is_refused(tmp_path, evil):
    root = _hub_serving(tmp_path, lambda path: _zip(path, {"adapter_config.json": b"{}", evil: b"owned"}))
    with pytest.raises(UnsafeArchiveError, match="refused, nothing extracted"):
        hub.resolve("sentiment/rotten_tomatoes@ukp", hubs=str(root), cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/adapterctl-escaped.txt")


@pytest.mark.parametrize("entries, reason", [
    ({"adapter_config.json": b"{}", "setup.py": b"import os"}, "'setup.py' is not a file an adapter folder holds; "
                                                               "the files are: adapter_config.json, adapter.safetensors"),
    ({"adapter_config.json": b"{}", "model.safetensors": b"x"}, "'model.safetensors' is not a file"),
    ({"adapter_config.json": b"{}", "a/adapter.safetensors": b"x"}, "sub-folders only in a setup"),
    ({"adapter_setup.json": b"{}", "a/b/adapter.safetensors": b"x"}, "'a/b/adapter.safetensors' is not a file"),
    ({"adapter_setup.json": b"{}", "a/notes.txt": b"x"}, "'a/notes.txt' is not a file"),
])
def test_unpack_accepts_only_what_an_adapter_folder_holds(tmp_path, entries, reason):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match=reason):
        unpack(_zip(tmp_path / "x.zip", entries), out)
    assert files_in(out) == []


def test_the_table_lists_every_file_the_library_and_adapterhub_save():
    saved = {adapterhub.ADAPTER_CONFIG, adapterhub.HEAD_CONFIG, adapterhub.FUSION_CONFIG,
             adapterhub.SETUP_CONFIG, *adapterhub.ADAPTER_WEIGHTS, *adapterhub.HEAD_WEIGHTS,
             *adapterhub.FUSION_WEIGHTS}
    assert saved - set(ADAPTER_FILES) == set()
    folders = [d for d in (REPO / "tests" / "fixtures").rglob("*")
               if d.is_dir() and any((d / name).is_file() for name in CONFIG_FILES)]
    assert len(folders) > 20  # what adapters 1.3.0 saved (tests/fixtures/adapterhub*)
    for folder in folders:
        assert layout_problem([p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]) is None


def test_a_setup_folder_packs_and_unpacks_with_its_sub_folders(tmp_path):
    folder = tmp_path / "setup"
    for name in ("a", "b", "a,b"):
        (folder / name).mkdir(parents=True)
    (folder / "adapter_setup.json").write_text("{}")
    for name in ("a", "b"):
        (folder / name / "adapter_config.json").write_text("{}")
        (folder / name / "adapter.safetensors").write_bytes(os.urandom(100))
    (folder / "a,b" / "adapter_fusion_config.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    unpack(pack(folder, tmp_path / "setup.zip"), out)
    assert files_in(out) == files_in(folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeArchiveError, match="'notes.txt' is not a file an adapter folder holds.*Move other files"):
        pack(folder, tmp_path / "other.zip")
    assert not (tmp_path / "other.zip").exists()


def _bomb(path, size):
    """A valid adapter zip whose weights are ``size`` zero bytes: a few kB on disk."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("adapter_config.json", b"{}")
        with zf.open("adapter.safetensors", "w") as f:
            for _ in range(size // 2**20):
                f.write(bytes(2**20))
    return path


def test_an_archive_that_expands_beyond_what_adapters_need_is_refused_before_writing(tmp_path, monkeypatch):
    archive = _bomb(tmp_path / "bomb.zip", 16 * 2**20)
    out = tmp_path / "out"
    out.mkdir()
    limits = Limits(floor=2**20)  # 20x a ~16 kB archive, at least 1 MiB
    with pytest.raises(UnsafeArchiveError, match=r"would unpack to 16777218 bytes, more than the 1048576 allowed for "
                                                 r"a \d+-byte archive \(a zip bomb\?\); refused, nothing extracted"):
        unpack(archive, out, limits)
    assert files_in(out) == []
    monkeypatch.setenv("ADAPTERCTL_MAX_UNPACK_RATIO", "2000")  # trusted: allow it
    unpack(archive, out, Limits.from_env())
    assert (out / "adapter.safetensors").stat().st_size == 16 * 2**20
    monkeypatch.setenv("ADAPTERCTL_MAX_UNPACKED", "lots")
    with pytest.raises(UnsafeArchiveError, match="ADAPTERCTL_MAX_UNPACKED='lots' is not a number; set it to a byte count"):
        Limits.from_env()


def test_a_hub_serving_a_zip_bomb_is_refused(tmp_path):
    """With the default limits, and a card whose sha256 matches the bomb."""
    root = _hub_serving(tmp_path, lambda path: _bomb(path, 72 * 2**20))
    with pytest.raises(UnsafeArchiveError, match=r"would unpack to 75497474 bytes, more than the 67108864 allowed"):
        hub.resolve("sentiment/rotten_tomatoes@ukp", hubs=str(root), cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []
