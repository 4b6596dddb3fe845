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
from hub_support import files_in, make_run

from adapterctl import hub
from adapterctl.hub import index
from adapterctl.hub.errors import UnsafeArchiveError
from adapterctl.hub.pack import pack, unpack
from adapterctl.hub.publish import publish
from adapterctl.run.export import export_run


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
    ({"a.json": b"1", "a.json/": b""}, "names an entry twice"),
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


@pytest.mark.parametrize("evil", ["../../escaped.txt", "/tmp/adapterctl-escaped.txt"])
def test_a_hub_serving_an_escaping_archive_is_refused(tmp_path, evil):
    """The publisher is the attacker here: the card's sha256 matches the evil archive."""
    run, _ = make_run(tmp_path / "run")
    root = tmp_path / "hub"
    publish(export_run(run, tmp_path / "export", org="ukp"), root)
    [card_path] = (root / "adapters").rglob("*.yaml")
    [archive] = (root / "adapters").rglob("*.zip")
    archive.unlink()
    _zip(archive, {"adapter_config.json": b"{}", evil: b"owned"})
    card = yaml.safe_load(card_path.read_text())
    card["files"][0].update(sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), size=archive.stat().st_size)
    card_path.write_text(yaml.safe_dump(card))
    index.build(root)
    with pytest.raises(UnsafeArchiveError, match="refused, nothing extracted"):
        hub.resolve("sentiment/rotten_tomatoes@ukp", hubs=str(root), cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []
    assert not (tmp_path / "escaped.txt").exists() and not os.path.exists("/tmp/adapterctl-escaped.txt")
